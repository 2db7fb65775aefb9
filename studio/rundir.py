"""The run directory: creation, atomic writes, status. Torch-free.

OUT/<prompt-slug>-<YYYYmmdd-HHMMSS>/ holds config.toml, status.json, log.jsonl, previews/, checkpoint/,
asset.glb/.obj/.ply, turntable.gif, metrics.json. A run is finished only if status.json says so.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

STATUSES = ("running", "finished", "failed", "cancelled")


def slugify(prompt: str, max_len: int = 40) -> str:
    """'A red cube!' -> 'a-red-cube'."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "run"


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
