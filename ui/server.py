"""`studio ui`: build the app and serve it on localhost (never a public share link)."""
from __future__ import annotations

import os
from pathlib import Path

from studio.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
CONCURRENCY = 8
"""Handlers (not runs) served at once; runs are serialised per device by the JobManager."""


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'USER:PASS' -> (user, pass); UserError naming the fix otherwise."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth expects USER:PASS, e.g. --auth alice:secret")
    return user, password


def launch(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, out: Path | str = "out",
           auth: str | None = None, block: bool = True):
    """Serve the studio; with block=False return (demo, url) and keep serving in the background."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    credentials = parse_auth(auth)
    if not 0 < int(port) < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    out = Path(out).resolve()  # created by the first run; nothing is written if serving fails
    from .app import CSS, build_app
    from .jobs import JobManager

    manager = JobManager(out)
    demo = build_app(manager, out)
    demo.queue(default_concurrency_limit=CONCURRENCY)
    try:
        _, url, _ = demo.launch(server_name=host, server_port=int(port), share=False, auth=credentials,
                                allowed_paths=[str(out)], prevent_thread_lock=True, ssr_mode=False,
                                inbrowser=False, quiet=True, css=CSS, footer_links=[])
    except OSError:
        manager.close()
        raise UserError(f"cannot serve on {host}:{port} (in use or not allowed); pass another --port") from None
    print(f"studio ui: serving http://{host}:{port} (output folder {out}); Ctrl+C to stop", flush=True)
    if not block:
        return demo, url
    try:
        demo.block_thread()
    finally:
        manager.close()
        demo.close()
