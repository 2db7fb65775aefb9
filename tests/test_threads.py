"""The thread policy (studio/threads.py): fewer torch threads while other processes hold the cores, all of them
again when they stop; a count the user fixed is left alone."""
import os
import subprocess
import sys
import time

import pytest
import torch

from studio.threads import ThreadPolicy, cpu_seconds, fixed_threads


@pytest.fixture
def adaptive(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("STUDIO_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def settle(policy: ThreadPolicy, seconds: float = 1.6) -> None:
    """Tick like a run's steps do for `seconds` (a few measurement windows)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        policy.tick()


@pytest.mark.skipif(cpu_seconds() is None or (os.cpu_count() or 1) < 2, reason="needs /proc and 2+ cores")
def test_threads_drop_to_the_free_cores_beside_busy_processes_and_come_back(adaptive):
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    policy = ThreadPolicy(check_every_s=0.5)
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        settle(policy)
        assert torch.get_num_threads() == 1  # every core is held by a busy loop: one thread, not a spinning pair
    finally:
        for p in loops:
            p.kill()
            p.wait()
    settle(policy)
    assert torch.get_num_threads() >= 2 and policy.changes >= 2
    policy.restore()
    assert torch.get_num_threads() == cores


def test_a_thread_count_the_user_chose_is_left_alone(monkeypatch):
    monkeypatch.setenv("STUDIO_THREADS", "auto")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert fixed_threads() == 1 and not ThreadPolicy().adapting
    monkeypatch.setenv("STUDIO_THREADS", "3")
    assert fixed_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("STUDIO_THREADS", "auto")
    assert fixed_threads() is None
