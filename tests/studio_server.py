"""A real `studio ui` server in a subprocess on loopback, for the browser and HTTP API tests (not a test module).

The server runs the embedded model with a small `--defaults` layer (100 steps, a small export), as a shared demo
server would."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = """# a demo server's defaults: short runs and a small export
steps = 100
[log]
preview_every = 20
[export]
mesh_resolution = 48
texture_size = 128
fidelity_views = 2
turntable_frames = 4
turntable_size = 64
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, *flags: str, env: dict | None = None):
    """`studio ui --defaults ...` in a subprocess; (url, output folder, process, log file, log path)."""
    out = tmp / "out"
    (tmp / "defaults.toml").write_text(DEFAULTS)
    port = free_port()
    log_path = tmp / "server.log"
    log = open(log_path, "w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "ui", "--port", str(port), "--out", str(out),
                             "--defaults", str(tmp / "defaults.toml"), *flags],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except urllib.error.HTTPError:  # up, asks for a login
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"studio ui did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
    return url, out, proc, log, log_path


def stop_server(proc, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
