"""The run directory: creation, atomic writes, status. Torch-free.

OUT/<prompt-slug>-<YYYYmmdd-HHMMSS>/ holds config.toml, status.json, log.jsonl, previews/, checkpoint/,
asset.glb/.obj/.ply, turntable.gif, metrics.json, and .lock (held by the one process writing the folder: see
run_lock). A run is finished only if status.json says so.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

STATUSES = ("running", "finished", "failed", "cancelled")
LOCK_FILE = ".lock"
"""The run folder's lock file: held (flock) by the one process writing the folder; it holds that process's id."""


def slugify(prompt: str, max_len: int = 40) -> str:
    """'A red cube!' -> 'a-red-cube'."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "run"


def check_out_dir(out: Path) -> None:
    """UserError naming the fix when run folders cannot be made under `out` (a file, a read-only place); reads
    only, so the run can check it before the model loads and still write nothing on bad input."""
    out = Path(out)
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, not a folder; pass a folder for the run directories")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not writable (read-only or another user's); pass a folder you can write")


def create_run_dir(out: Path, prompt: str) -> Path:
    """A new, unique run directory under `out` (never reuses an existing one)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{slugify(prompt)}-{stamp}"
    for i in range(1000):
        path = out / (base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {out}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_status(run_dir: Path, status: str, **extra) -> None:
    """Record the run's state: running / finished / failed / cancelled (+ error, times, ...)."""
    assert status in STATUSES, status
    write_json(Path(run_dir) / "status.json", {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


def read_status(run_dir: Path) -> dict:
    """status.json of a run ({'status': 'unknown'} if missing or unreadable)."""
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {"status": "unknown"}


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's exclusive lock while the block runs: one writer (a run, a resume, a re-export) at a
    time. Another holder, in any process (or another run in this one), gets a UserError at once naming it. The
    kernel drops the lock when its process dies, so a killed run never leaves the folder locked."""
    import fcntl

    f = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        by = f" (process {holder})" if holder.isdigit() else ""
        raise UserError(f"{run_dir} is in use by another studio run, resume or export{by}; "
                        "wait for it to end or stop it, then try again") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()  # closing releases the lock
