"""Small helpers shared by the embedded model's training scripts: checkpoints, logs, timing."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def save_atomic(obj: object, path: Path) -> None:
    """torch.save to path via a temporary file, so a killed process never leaves a half-written checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def log_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


class Budget:
    """Wall-clock budget that survives resumes: `elapsed` counts time from earlier runs too."""

    def __init__(self, minutes: float, already: float = 0.0) -> None:
        self.total = 60.0 * minutes
        self.start = time.time() - already

    @property
    def elapsed(self) -> float:
        """Seconds used so far (including earlier runs)."""
        return time.time() - self.start

    @property
    def fraction(self) -> float:
        """Fraction of the budget used, in [0, 1]."""
        return min(self.elapsed / self.total, 1.0)

    def done(self) -> bool:
        return self.elapsed >= self.total


def cosine_lr(base: float, fraction: float, warmup: float = 0.03, floor: float = 0.05) -> float:
    """Learning rate at `fraction` of a time budget: linear warm-up, then cosine decay to floor * base."""
    if fraction < warmup:
        return base * max(fraction / warmup, 0.02)
    f = (fraction - warmup) / (1 - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + torch.cos(torch.tensor(f * torch.pi)).item()))


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [.., H, W] -> float in [-1, 1] (the diffusers image range)."""
    return x.float() / 127.5 - 1.0


class AdaptiveThreads:
    """Pick torch's thread count (1 or `max_threads`) by measured step time, re-checked periodically.

    On a shared 2-core machine another process often holds one core; then 2 OpenMP threads thrash (each parallel
    region waits for the descheduled thread) and 1 thread is faster. Every `every` steps, `probe` steps run with
    the other count; the faster count is kept.
    """

    def __init__(self, max_threads: int = 2, every: int = 100, probe: int = 5) -> None:
        self.options = sorted({1, max_threads})
        self.current = max_threads
        self.every, self.probe = every, probe
        self.times: dict[int, list[float]] = {n: [] for n in self.options}
        self.step, self.trying = 0, None
        torch.set_num_threads(self.current)

    def record(self, seconds: float) -> None:
        """Report the wall time of the step just finished; may switch the thread count for the next step."""
        if len(self.options) == 1:
            return
        self.step += 1
        n = torch.get_num_threads()
        self.times[n] = (self.times[n] + [seconds])[-self.probe :]
        if self.trying is None and self.step % self.every == 0:
            self.trying = next(o for o in self.options if o != self.current)
            self.times[self.trying] = []
            torch.set_num_threads(self.trying)
        elif self.trying is not None and len(self.times[self.trying]) >= self.probe:
            mean = lambda v: sum(v) / len(v)  # noqa: E731
            if mean(self.times[self.trying][1:]) < mean(self.times[self.current]):
                self.current = self.trying
            self.trying = None
            torch.set_num_threads(self.current)
