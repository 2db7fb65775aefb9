"""How many threads torch may use while other work shares the machine.

On this 2-core CPU, torch's two OpenMP threads meet at a barrier after every parallel op; when another process
holds one of the cores, the thread on it waits for its time slice and the other spins: a run went from ~14 it/s
idle to 0.02-0.4 it/s beside busy processes. One thread per core that is actually free keeps the run at its fair
share. `ThreadPolicy` measures how many cores other processes keep busy (from /proc/stat, minus this process's
own time) every few seconds and sets torch's intra-op threads to the free cores (at least one).

Left alone: a thread count the user chose (OMP_NUM_THREADS or STUDIO_THREADS set), and machines without /proc.
STUDIO_THREADS=N fixes N threads; STUDIO_THREADS=auto (or unset) adapts.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

CHECK_EVERY_S = 3.0
"""Seconds between two measurements of the other processes' load."""


def cpu_seconds() -> tuple[float, float] | None:
    """(busy seconds of the whole machine, busy seconds of this process) so far, or None without /proc."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    values = [float(v) for v in fields[:8]]
    busy = sum(values) - values[3] - values[4]  # all but idle and iowait
    return busy / ticks, (float(own[11]) + float(own[12])) / ticks  # utime, stime


def fixed_threads() -> int | None:
    """The thread count the user fixed (STUDIO_THREADS=N, else OMP_NUM_THREADS), or None to adapt."""
    chosen = os.environ.get("STUDIO_THREADS", "auto").strip().lower()
    if chosen not in ("", "auto"):
        return max(1, int(chosen)) if chosen.isdigit() else None
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    return max(1, int(omp)) if omp.isdigit() else None


class ThreadPolicy:
    """Call `tick()` once a step: every CHECK_EVERY_S it sets torch's threads to the cores other processes leave
    free (at least 1, at most the cores this process may run on)."""

    def __init__(self, check_every_s: float = CHECK_EVERY_S) -> None:
        import torch

        self.torch = torch
        self.check_every_s = check_every_s
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.fixed = fixed_threads()
        self.initial = torch.get_num_threads()
        self.changes = 0
        """How many times the thread count changed (reported in metrics.json)."""
        if self.fixed is not None and self.fixed != self.initial:  # STUDIO_THREADS=N (OMP_NUM_THREADS torch reads)
            torch.set_num_threads(self.fixed)
            self.changes = 1
        self.last = (time.monotonic(), cpu_seconds())

    @property
    def adapting(self) -> bool:
        return self.fixed is None and self.last[1] is not None and self.cores > 1

    def tick(self) -> None:
        if not self.adapting:
            return
        now = time.monotonic()
        if now - self.last[0] < self.check_every_s:
            return
        sample = cpu_seconds()
        (then, before), self.last = self.last, (now, sample)
        if sample is None or before is None:
            return
        others = max(0.0, (sample[0] - before[0]) - (sample[1] - before[1])) / (now - then)  # cores busy elsewhere
        threads = max(1, min(self.cores, round(self.cores - others)))
        if threads != self.torch.get_num_threads():
            self.torch.set_num_threads(threads)
            self.changes += 1

    def restore(self) -> None:
        """Put back the thread count the process had (the web studio runs one job after another in one process)."""
        if self.changes:
            self.torch.set_num_threads(self.initial)
