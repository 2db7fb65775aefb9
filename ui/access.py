"""Who may use a `studio ui` server and whose runs each user sees. Torch-free, gradio-free.

Without users (no --auth), the server is one person's: every run under --out is theirs. With users, each run
folder records its owner in `access.json` ({"owner": NAME, "shared": false}) when it is created; a user sees
and downloads only their own runs, runs an admin has shared, and (admins) everything.
"""
from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import UserError
from studio.rundir import atomic_write_text

ACCESS_FILE = "access.json"
"""The owner record in a run folder."""
AUTH_ENV = "STUDIO_AUTH"
"""Environment variable with USER:PASS entries (one a line or comma-separated), instead of --auth on argv."""


@dataclass
class Users:
    """The accounts of a server; empty = no login (one person's server)."""

    passwords: dict[str, str] = field(default_factory=dict)
    """User name -> password."""
    admins: frozenset[str] = frozenset()
    """Users who see every run and may share runs with everyone."""

    @property
    def enabled(self) -> bool:
        return bool(self.passwords)

    def check(self, user: str, password: str) -> bool:
        """Gradio's auth callback: whether the pair is an account."""
        import hmac

        expected = self.passwords.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


def parse_entry(text: str, where: str) -> tuple[str, str]:
    """'USER:PASS' -> (user, pass); UserError naming the fix otherwise (`where` says which source)."""
    user, sep, password = text.strip().partition(":")
    if not sep or not user.strip() or not password:
        raise UserError(f"{where} expects USER:PASS, e.g. --auth alice:secret")
    return user.strip(), password


def load_users(auth: list[str] | None = None, auth_file: Path | str | None = None, admins: list[str] | None = None,
               env: dict[str, str] | None = None) -> Users:
    """Accounts from --auth USER:PASS (repeatable), --auth-file FILE (USER:PASS a line, '#' comments) and the
    STUDIO_AUTH environment variable; later sources win for the same user. UserError for bad entries."""
    env = os.environ if env is None else env
    entries: list[tuple[str, str]] = []
    for item in auth or []:
        entries.append(parse_entry(item, "--auth"))
    if auth_file is not None:
        path = Path(auth_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise UserError(f"--auth-file {path}: cannot read it ({e.strerror}); give a file of USER:PASS lines") from None
        for n, line in enumerate(lines, 1):
            if line.strip() and not line.strip().startswith("#"):
                entries.append(parse_entry(line, f"--auth-file {path} line {n}"))
    for item in env.get(AUTH_ENV, "").replace(",", "\n").splitlines():
        if item.strip():
            entries.append(parse_entry(item, AUTH_ENV))
    passwords = dict(entries)
    unknown = sorted(set(admins or []) - set(passwords))
    if unknown:
        raise UserError(f"--admin {', '.join(unknown)}: not a user; add them with --auth, --auth-file or {AUTH_ENV}")
    return Users(passwords, frozenset(admins or []))


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_warning(host: str, users: Users) -> str | None:
    """The loud warning for a server others can reach without a login, else None."""
    if users.enabled or is_loopback(host):
        return None
    return (f"WARNING: serving on {host} WITHOUT a login: anyone who can reach this address can run jobs on this "
            f"machine and download every run. Add accounts with --auth-file FILE or {AUTH_ENV}.")


def record_owner(run_dir: Path | str, owner: str) -> None:
    """Write RUN_DIR/access.json for a new run (kept as it is when it exists, e.g. on resume)."""
    path = Path(run_dir) / ACCESS_FILE
    if not path.exists():
        atomic_write_text(path, json.dumps({"owner": owner, "shared": False}) + "\n")


def read_access(run_dir: Path | str) -> dict:
    """RUN_DIR/access.json ({} when missing or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / ACCESS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def set_shared(run_dir: Path | str, shared: bool) -> None:
    """Share a run with every user (or stop sharing it)."""
    data = read_access(run_dir)
    data["shared"] = bool(shared)
    atomic_write_text(Path(run_dir) / ACCESS_FILE, json.dumps(data) + "\n")


def may_see(run_dir: Path | str, user: str, users: Users) -> bool:
    """Whether `user` may see and download the run (everything when the server has no accounts)."""
    if not users.enabled or user in users.admins:
        return True
    data = read_access(run_dir)
    return bool(user) and (data.get("owner") == user or data.get("shared") is True)
