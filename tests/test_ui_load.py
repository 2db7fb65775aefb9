"""A load test of the web studio (issue 19): 10 concurrent API clients against a real `studio ui` server on
loopback, with the embedded model and tiny runs (32 px, a few steps, a GLB of a 16³ grid, no texture, no
turntable). Each client submits, polls /status and sees its place in the queue while it waits; some cancel
while queued, some stop their run once it trains, the rest download their GLB and read it back. Two waves of
the same 10 clients: nobody gets an error, the server logs no traceback, and the server's resident memory after
the second wave is within a bound of what it was after the first (the first wave loads the model and warms up
torch and Gradio), with no more threads or open files. The JobManager itself forgets the oldest ended jobs, so
the memory of a server that has run thousands of jobs stays flat too."""
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trimesh

from studio.rundir import read_status
from studio_server import start_server, stop_server

pytestmark = [pytest.mark.slow]

CLIENTS = 10
TINY = "\n".join([
    "camera.resolution = 32", "log.preview_every = 0", "export.formats = ['glb']", "export.mesh_resolution = 16",
    "export.faces = 0", "export.texture_size = 0", "export.fidelity_views = 0", "export.turntable_frames = 0"])
"""Overrides that keep a run about 1.5 s on a 2-core CPU (5 steps and the export of a small vertex-coloured GLB)."""
ROLES = ["download", "cancel", "download", "stop", "download", "download", "cancel", "download", "stop", "download"]
"""What each client does: download its finished GLB, cancel right after its first poll (while queued, unless its
job went first), or stop its run once it has trained a step."""
LONG = 1000
"""Steps of the runs that are cancelled or stopped: they cannot finish before the client stops them."""
RSS_GROWTH_MB = 150
"""Resident memory (MB) the second wave may add. Measured on a 2-core CPU: 720-740 MB after the first wave (the
embedded model loaded), -2 to +24 MB more after the second (allocator noise of 10 runs and ~300 API calls). A
scene, model copy or export kept per job (>= 15 MB each, 10 jobs a wave) would break the bound."""
DEADLINE = 120
"""Seconds a client may take for its whole job (bounded: a hung server fails the test instead of hanging it)."""


@dataclass
class Seen:
    """What one client saw of its job."""

    role: str
    job: str = ""
    first: str = ""
    """The status of its first poll."""
    positions: list[int] = field(default_factory=list)
    """Queue positions reported while it was queued, in poll order."""
    final: dict = field(default_factory=dict)
    glb_faces: int = 0
    slowest_poll: float = 0.0
    """Seconds of its slowest /status call."""
    error: BaseException | None = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    url, out, proc, log, log_path = start_server(tmp, env={"GRADIO_TEMP_DIR": str(tmp / "gradio")})
    yield url, out, proc, log_path, tmp
    stop_server(proc, log)


def usage(pid: int) -> dict:
    """A process's resident memory (MB), threads and open file descriptors (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


def one_job(c, i: int, seen: Seen, downloads: Path) -> None:
    """Client i's whole job: submit, poll, cancel / stop / download, as `seen.role` says."""
    steps = 5 if seen.role == "download" else LONG
    answer = c.predict(f"a red cube {i}", steps, i, "", "", "", TINY, api_name="/submit")
    assert answer["status"] == "queued", answer
    seen.job = answer["job"]
    stopped = False
    deadline = time.monotonic() + DEADLINE
    while True:
        asked = time.monotonic()
        s = c.predict(seen.job, api_name="/status")
        seen.slowest_poll = max(seen.slowest_poll, time.monotonic() - asked)
        seen.first = seen.first or s["status"]
        if s["status"] == "queued":
            seen.positions.append(s["queue_position"])
            assert s["text"].startswith(f"Queued: position {s['queue_position']}"), s
        if not stopped and (seen.role == "cancel" or (seen.role == "stop" and s["status"] == "running"
                                                      and s["step"] >= 1)):
            assert c.predict(seen.job, api_name="/cancel") == {"cancelled": True}
            stopped = True
        if s["status"] in ("finished", "failed", "cancelled"):
            seen.final = s
            break
        assert time.monotonic() < deadline, s
        time.sleep(0.2)
    if seen.role == "download" and s["status"] == "finished":
        path = c.predict(seen.job, "asset.glb", api_name="/download")
        assert Path(path).is_relative_to(downloads), path
        seen.glb_faces = len(trimesh.load(path, force="mesh").faces)


def wave(clients, downloads: Path) -> tuple[list[Seen], float]:
    """All clients do one job each at the same time; what each saw, and the 1-minute load average at the end."""
    seen = [Seen(role) for role in ROLES]
    start = threading.Barrier(len(clients))

    def go(i):
        try:
            start.wait(timeout=30)
            one_job(clients[i], i, seen[i], downloads)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            seen[i].error = e

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE + 30)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return seen, os.getloadavg()[0]


def check_wave(seen: list[Seen], out: Path) -> None:
    errors = [(i, s.role, repr(s.error)) for i, s in enumerate(seen) if s.error is not None]
    assert not errors, errors
    for i, s in enumerate(seen):
        want = "finished" if s.role == "download" else "cancelled"
        assert s.final["status"] == want and not s.final["error"], (i, s.role, s.final)
        if s.role == "download":
            assert s.final["step"] == s.final["total"] == 5 and s.glb_faces > 0, (i, s.final, s.glb_faces)
            assert (out / s.final["run"] / "asset.glb").exists()
        else:
            assert s.final["step"] < LONG and s.final["run"], (i, s.final)
            if s.role == "stop":  # stopped after a step: resumable from a checkpoint of that step
                assert s.final["checkpoint_step"] == s.final["step"] >= 1 and "Resume" in s.final["text"], s.final
            assert read_status(out / s.final["run"])["status"] == "cancelled", (i, s.final)
        # a waiting client sees its place, and it only moves forward
        assert all(1 <= p <= CLIENTS for p in s.positions), (i, s.positions)
        assert s.positions == sorted(s.positions, reverse=True), (i, s.positions)
    # every job but the one that found the device idle waited in the queue and was told where
    never_queued = [(i, s.first) for i, s in enumerate(seen) if not s.positions]
    assert len(never_queued) <= 1, never_queued
    assert all(first in ("starting", "running") for _, first in never_queued), never_queued
    assert len({s.job for s in seen}) == CLIENTS


def test_ten_clients_submit_poll_stop_download(server, tmp_path):
    from gradio_client import Client

    url, out, proc, log_path, _ = server
    downloads = tmp_path / "downloads"
    began = time.monotonic()
    clients = [Client(url, verbose=False, download_files=str(downloads)) for _ in range(CLIENTS)]
    try:
        two_waves(clients, downloads, out, proc, log_path, began)
    finally:
        for c in clients:
            c.close()


def two_waves(clients, downloads: Path, out: Path, proc, log_path: Path, began: float) -> None:
    seen1, load1 = wave(clients, downloads)
    check_wave(seen1, out)
    time.sleep(1)  # let the worker finish tidying the last run
    after1 = usage(proc.pid)
    seen2, load2 = wave(clients, downloads)
    check_wave(seen2, out)
    time.sleep(1)
    after2 = usage(proc.pid)
    log = log_path.read_text()
    print(f"\nload test: {time.monotonic() - began:.1f} s for two waves of {CLIENTS} clients; server after the "
          f"first {after1}, after the second {after2}; load average {load1:.2f}, {load2:.2f}; slowest /status "
          f"{max(s.slowest_poll for s in seen1 + seen2):.2f} s; queue positions seen "
          f"{sorted({p for s in seen1 + seen2 for p in s.positions})}")
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert after2["rss_mb"] - after1["rss_mb"] < RSS_GROWTH_MB, (after1, after2)
    assert after2["threads"] <= after1["threads"] + 2 and after2["fds"] <= after1["fds"] + 5, (after1, after2)
    # the cancelled-while-queued runs have folders (History lists them), and nothing else is left running
    statuses = sorted(read_status(p)["status"] for p in out.iterdir() if p.is_dir())
    assert statuses == sorted(["finished" if r == "download" else "cancelled" for r in ROLES] * 2), statuses


def test_the_manager_forgets_the_oldest_ended_jobs(tmp_path):
    """A long-lived server's memory stays flat: a JobManager remembers the last `keep_ended` ended jobs (each view
    holds its loss curve and log), not every job since it started; the forgotten runs' folders stay."""
    from studio.config import build_config
    from ui.jobs import JobManager

    cfg = build_config([{"prompt": "a red cube", "steps": 1}], ["guidance.model=tiny-random", "camera.resolution=32"])
    jobs = JobManager(tmp_path / "out", keep_ended=3)
    ids = [jobs.submit(cfg) for _ in range(6)]
    for job in ids:  # one of the first two may have started: it stops after its first event
        assert jobs.cancel(job)
    ended = [v for job in ids if (v := jobs.wait(job, timeout=120)) is not None]  # None: ended and forgotten
    assert all(v.status == "cancelled" for v in ended), [v.status for v in ended]
    remembered = [job for job in ids if jobs.view(job) is not None]
    assert len(remembered) == 3 and all(jobs.view(job).ended for job in remembered), remembered
    assert ids[-1] in remembered  # cancelled last, while queued
    assert all(jobs.wait(job) is None for job in ids if job not in remembered)
    runs = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert sorted(read_status(p)["status"] for p in runs) == ["cancelled"] * 6  # History still lists all six
    new = jobs.submit(cfg)
    assert jobs.cancel(new) and jobs.wait(new, timeout=120).status == "cancelled"
    assert len([job for job in [*ids, new] if jobs.view(job) is not None]) == 3
    jobs.close()
