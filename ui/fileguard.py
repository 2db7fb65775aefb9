"""Each user downloads only the files the studio handed to them.

Gradio serves every file it was given from its cache (`/gradio_api/file=CACHE/<hash>/<name>`) to any logged-in
user who has the link. On a server with accounts, `ServedFiles` records which users each cached copy was handed
to (the handlers call `add` for every file they show), and `FileGuard`, an ASGI middleware in front of Gradio's
routes, answers 404 to anyone else asking for it. Files the studio never handed out (Gradio's own) pass.
"""
from __future__ import annotations

import re
import threading
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import unquote


FILE_ROUTE = re.compile(r"^(?:/gradio_api)?/file[=/](.+)$")
"""Gradio's file routes (`/gradio_api/file=PATH`, and the older `/file=PATH` and `/file/PATH`)."""


def cached_copy(path: Path | str) -> str:
    """Where Gradio's cache will hold `path` (the same secret-seeded content hash and name Gradio computes)."""
    from gradio import processing_utils, utils
    from gradio_client import utils as client_utils

    name = client_utils.strip_invalid_filename_characters(Path(path).name)
    return str(utils.abspath(Path(utils.get_upload_folder()) / processing_utils.hash_file(path) / name))


class ServedFiles:
    """Cached copy -> the users it was handed to. Thread-safe."""

    def __init__(self, admins: frozenset[str] = frozenset()) -> None:
        self.admins = admins
        self._owners: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def add(self, path: Path | str, user: str) -> None:
        """Record that `user` was shown the file `path` (before Gradio copies it into its cache)."""
        copy = cached_copy(path)
        with self._lock:
            self._owners.setdefault(copy, set()).add(user)

    def may_fetch(self, cache_path: str, user: str | None) -> bool:
        """Whether `user` may fetch `cache_path` (anything the studio did not hand out is Gradio's own: yes)."""
        with self._lock:
            owners = self._owners.get(cache_path)
        return owners is None or (user is not None and (user in owners or user in self.admins))


class FileGuard:
    """ASGI middleware: a request for a cached file someone else was handed gets 404, as if it did not exist."""

    def __init__(self, app, served: ServedFiles) -> None:
        self.app = app
        self.served = served

    async def __call__(self, scope, receive, send) -> None:
        match = FILE_ROUTE.search(scope.get("path", "")) if scope["type"] == "http" else None
        if match:
            path = unquote(match.group(1))
            if not self.served.may_fetch(_abspath(path), _user(scope)):
                await send({"type": "http.response.start", "status": 404,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"Not found"})
                return
        await self.app(scope, receive, send)


def _abspath(path: str) -> str:
    from gradio import utils

    try:
        return str(utils.abspath(path))
    except (OSError, ValueError):
        return path


def _user(scope) -> str | None:
    """The logged-in user of a request: Gradio's access-token cookie looked up in the app's tokens."""
    app = scope.get("app")
    cookies = SimpleCookie()
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            try:
                cookies.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie is no login
                return None
    cookie_id = getattr(app, "cookie_id", None)
    tokens = getattr(app, "tokens", {})
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if name in cookies:
            return tokens.get(cookies[name].value)
    return None
