"""`studio batch FILE`: run many jobs one after another; a failing job does not stop the others.

FILE is plain text (one prompt a line; blank lines and '#' comments skipped) or TOML with
[[job]] tables taking `prompt` plus the generate flags (steps, seed, representation, distillation,
model, preset, config) and `set = ["key=value", ...]`. DIR/manifest.json records every job.
"""
from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

from .errors import ConfigError, UserError
from .rundir import write_json

JOB_KEYS = ("prompt", "steps", "seed", "representation", "distillation", "model", "preset", "config", "set")
JOB_TYPES = {"steps": int, "seed": int, "set": list}
"""The type of each [[job]] key's value that is not a string (a kind, a model, a preset, a file are names)."""


def read_jobs(path: Path) -> list[dict]:
    """The jobs of a batch file as dicts of generate flags. ConfigError if the file is malformed."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read batch file {path}: {e}") from None
    if path.suffix.lower() == ".toml":
        return _toml_jobs(text, path)
    jobs = [{"prompt": line.strip()} for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not jobs:
        raise ConfigError(f"batch file {path} has no prompts (one prompt a line)")
    return jobs


def _toml_jobs(text: str, path: Path) -> list[dict]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"batch file {path} is not valid TOML: {e}") from None
    jobs = data.get("job")
    if set(data) - {"job"} or not isinstance(jobs, list) or not jobs:
        raise ConfigError(f"batch file {path} must contain [[job]] tables (each with a prompt) and nothing else")
    for i, job in enumerate(jobs, 1):
        if not isinstance(job, dict):
            raise ConfigError(f"job {i} in {path} is not a table; write each job as a [[job]] table with a prompt")
        unknown = sorted(set(job) - set(JOB_KEYS))
        if unknown:
            raise ConfigError(f"job {i} in {path}: unknown key {unknown[0]!r}; valid: {', '.join(JOB_KEYS)}")
        for key, value in job.items():
            kind = JOB_TYPES.get(key, str)
            if not isinstance(value, kind) or isinstance(value, bool) or (
                    key == "set" and not all(isinstance(item, str) for item in value)):
                what = {int: "a whole number", list: 'a list of "key=value" strings', str: "a string"}[kind]
                raise ConfigError(f"job {i} in {path}: {key} must be {what}, got {value!r}"[:300])
        if "config" in job:
            job["config"] = (path.parent / job["config"]).resolve()
    return jobs


def build_job_configs(jobs: list[dict]) -> list:
    """Validate every job up front (so a typo in job 7 fails before job 1 runs)."""
    from .jobs import job_config

    configs = []
    for i, job in enumerate(jobs, 1):
        try:
            configs.append(job_config({**job, "overrides": job.get("set", [])}))
        except UserError as e:
            raise ConfigError(f"job {i}: {e}") from None
    return configs


def run_batch(file: Path, out: Path, stream=None) -> int:
    """Run every job; returns the exit code (0 all finished, 1 some failed)."""
    from .progress import run_with_progress

    stream = stream or sys.stderr
    configs = build_job_configs(read_jobs(file))
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"file": str(file), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": []}
    for cfg in configs:
        manifest["jobs"].append({"prompt": cfg.prompt, "status": "queued", "run_dir": None})
    write_json(out / "manifest.json", manifest)
    failed = 0
    for i, cfg in enumerate(configs):
        entry = manifest["jobs"][i]
        print(f"job {i + 1}/{len(configs)}: {cfg.prompt}", file=stream)
        entry["status"] = "running"
        write_json(out / "manifest.json", manifest)
        try:
            finished = run_with_progress(cfg, out, stream)
            entry.update(status="finished", run_dir=str(finished.run_dir),
                         assets={k: str(v) for k, v in finished.assets.items()})
        except Exception as e:  # noqa: BLE001 - one job's failure must not stop the batch
            failed += 1
            entry.update(status="failed", error=f"{type(e).__name__}: {e}", run_dir=_latest_run(out, cfg.prompt))
            print(f"job {i + 1} failed: {e}", file=stream)
        write_json(out / "manifest.json", manifest)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(out / "manifest.json", manifest)
    print(out / "manifest.json")
    return 1 if failed else 0


def _latest_run(out: Path, prompt: str) -> str | None:
    from .rundir import slugify

    runs = sorted(out.glob(f"{slugify(prompt)}-*"), key=lambda p: p.stat().st_mtime)
    return str(runs[-1]) if runs else None
