"""`studio ui`: its flags, and serving the app on localhost (never a public share link).

Importing this module imports neither gradio nor torch (`studio --help` builds the flags from it).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from studio.errors import UserError

from .access import AUTH_ENV, Users, host_warning, load_users
from .limits import ServerLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
CONCURRENCY = 8
"""Handlers (not runs) served at once; runs are serialised per device by the JobManager."""


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'USER:PASS' -> (user, pass); UserError naming the fix otherwise."""
    from .access import parse_entry

    return None if text is None else parse_entry(text, "--auth")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `studio ui` flags: where to serve, who may log in, the server's defaults and its per-run limits."""
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 7860)")
    p.add_argument("--out", default="out", help="folder for run directories (default: out)")
    p.add_argument("--auth", metavar="USER:PASS", action="append", default=[],
                   help=f"an account (repeatable; visible to other users of this machine: prefer --auth-file or {AUTH_ENV})")
    p.add_argument("--auth-file", dest="auth_file", metavar="FILE", type=Path,
                   help="accounts, one USER:PASS a line ('#' comments)")
    p.add_argument("--admin", metavar="USER", action="append", default=[],
                   help="a user who sees every run and may share runs with everyone (repeatable)")
    p.add_argument("--defaults", metavar="FILE", type=Path,
                   help="a TOML config layer under every run of this server (e.g. a faster demo setup)")
    limits = ServerLimits()
    for f in fields(ServerLimits):
        if f.type in ("int", "float", int, float):
            kind = int if f.type in ("int", int) else float
            p.add_argument(ServerLimits.flag(f.name), dest=f.name, type=kind, default=getattr(limits, f.name), metavar="N",
                           help=f"{_doc(f.name)} (default: {getattr(limits, f.name)})")
    p.add_argument("--embedded-only", dest="allow_custom_models", action="store_false",
                   help="users may not name a model folder or hub id")


def _doc(name: str) -> str:
    """The field docstring of a ServerLimits field, shortened for --help."""
    from .limits import limit_docs

    return limit_docs().get(name, name).split(" (")[0].rstrip(".")


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The ServerLimits of parsed `studio ui` flags (UserError for a limit below 1)."""
    values = {f.name: getattr(args, f.name) for f in fields(ServerLimits) if hasattr(args, f.name)}
    for name, value in values.items():
        if not isinstance(value, bool) and value <= 0:
            raise UserError(f"{ServerLimits.flag(name)} must be positive, got {value}")
    return ServerLimits(**values)


def base_layers(path: Path | None) -> tuple[dict, ...]:
    """The server's --defaults layer, checked like any config (UserError naming the bad key)."""
    if path is None:
        return ()
    from studio.config import build_config, read_toml

    layer = read_toml(path)
    build_config([layer, {"prompt": "check"}])  # unknown keys and bad values fail now, not at the first Generate
    return (layer,)


def main(args: argparse.Namespace) -> int:
    """`studio ui` from parsed flags."""
    users = load_users(args.auth, args.auth_file, args.admin)
    launch(args.host, args.port, args.out, users=users, limits=limits_from_args(args), base=base_layers(args.defaults))
    return 0


def launch(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, out: Path | str = "out", users: Users | None = None,
           limits: ServerLimits | None = None, base: tuple[dict, ...] = (), block: bool = True):
    """Serve the studio; with block=False return (demo, url) and keep serving in the background."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    users = users or Users()
    if not 0 < int(port) < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    out = Path(out).resolve()  # created by the first run; nothing is written if serving fails
    _log_to_stderr()
    from .app import CSS, build_app
    from .jobs import JobManager

    manager = JobManager(out)
    demo = build_app(manager, out, limits, users, base)
    demo.queue(default_concurrency_limit=CONCURRENCY)
    app_kwargs = {}
    if demo.studio_handlers.served is not None:  # accounts: each user fetches only the files shown to them
        from starlette.middleware import Middleware

        from .fileguard import FileGuard

        app_kwargs["middleware"] = [Middleware(FileGuard, served=demo.studio_handlers.served)]
    try:
        _, url, _ = demo.launch(server_name=host, server_port=int(port), share=False, app_kwargs=app_kwargs,
                                auth=users.check if users.enabled else None,  # no allowed_paths: see handlers.servable
                                prevent_thread_lock=True, ssr_mode=False, inbrowser=False, quiet=True, css=CSS,
                                footer_links=["api"])
    except OSError:
        manager.close()
        raise UserError(f"cannot serve on {host}:{port} (in use or not allowed); pass another --port") from None
    warning = host_warning(host, users)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"studio ui: serving http://{host}:{port} (output folder {out}"
          f"{f', {len(users.passwords)} accounts' if users.enabled else ''}); Ctrl+C to stop", flush=True)
    if not block:
        return demo, url
    try:
        demo.block_thread()
    finally:
        manager.close()
        demo.close()


def _log_to_stderr() -> None:
    """Handler errors (logger 'studio.ui') reach the server's stderr with their traceback."""
    logger = logging.getLogger("studio.ui")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
