"""Run folders as the History and Batch tabs show them, and the files offered for download. Torch-free.

Downloads are whatever asset files exist in a run directory, so formats added by the export pipeline
(textured OBJ with .mtl and texture images, splat.ply, ...) show up without changes here.
"""
from __future__ import annotations

import json
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from studio.rundir import read_status

SINGLE_FILES = ("asset.glb", "asset.ply", "splat.ply", "turntable.mp4", "turntable.gif")
"""Files offered as they are, in this order (when present)."""
OBJ_ZIP = "asset-obj.zip"
"""The OBJ with its material library and textures, zipped (written next to the OBJ on demand)."""


@dataclass
class RunRow:
    """One run folder in the History table."""

    run_dir: Path
    """The folder."""
    prompt: str
    """Its prompt (from config.toml or status.json)."""
    status: str
    """finished / cancelled / failed / running / unknown."""
    settings: str
    """representation, distillation, steps, seed in one line."""
    time: str
    """When the status was last written."""
    thumbnail: Path | None
    """The last preview grid, if any."""


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.toml").is_file()


def read_config_dict(run_dir: Path) -> dict:
    """config.toml as a plain dict ({} if unreadable)."""
    try:
        return tomllib.loads((Path(run_dir) / "config.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def settings_line(cfg: dict) -> str:
    rep = cfg.get("representation", {}).get("kind", "?")
    dis = cfg.get("distillation", {}).get("kind", "?")
    return f"{rep} · {dis} · {cfg.get('steps', '?')} steps · seed {cfg.get('seed', '?')}"


def thumbnail(run_dir: Path) -> Path | None:
    """The latest preview PNG of a run."""
    previews = sorted(Path(run_dir).glob("previews/step_*.png"))
    return previews[-1] if previews else None


def list_runs(out: Path | str, limit: int = 200) -> list[RunRow]:
    """Run folders under `out` (also one level down, e.g. batch folders), newest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    dirs = [p for p in out.iterdir() if is_run_dir(p)]
    dirs += [q for p in out.iterdir() if p.is_dir() and not is_run_dir(p) for q in p.iterdir() if is_run_dir(q)]
    dirs.sort(key=lambda p: (p / "config.toml").stat().st_mtime, reverse=True)
    rows = []
    for d in dirs[:limit]:
        cfg, status = read_config_dict(d), read_status(d)
        rows.append(RunRow(d, cfg.get("prompt") or status.get("prompt", ""), status.get("status", "unknown"),
                           settings_line(cfg), status.get("time", ""), thumbnail(d)))
    return rows


def table(rows: list[RunRow]) -> list[list[str]]:
    """The History table's rows: prompt, status, settings, time, folder name."""
    return [[r.prompt, r.status, r.settings, r.time.replace("T", " "), r.run_dir.name] for r in rows]


def obj_bundle(run_dir: Path) -> list[Path]:
    """asset.obj and the files it needs: its material libraries and the textures they name."""
    run_dir = Path(run_dir)
    obj = run_dir / "asset.obj"
    if not obj.is_file():
        return []
    files = [obj]
    mtls = _names(obj, r"^\s*mtllib\s+(.+?)\s*$") or [p.name for p in run_dir.glob("asset*.mtl")]
    for name in mtls:
        mtl = run_dir / name
        if mtl.is_file() and mtl not in files:
            files.append(mtl)
            for args in _names(mtl, r"^\s*(?:map_\w+|bump|disp|norm)\s+(.+?)\s*$"):
                path = run_dir / args.split()[-1]  # the file name comes after any -option values
                if path.is_file() and path not in files:
                    files.append(path)
    return files


def _names(path: Path, pattern: str) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return re.findall(pattern, text, flags=re.MULTILINE)


def zip_obj(run_dir: Path) -> Path | None:
    """RUN_DIR/asset-obj.zip with the OBJ, its .mtl and textures (rebuilt if older than the OBJ)."""
    files = obj_bundle(run_dir)
    if not files:
        return None
    target = Path(run_dir) / OBJ_ZIP
    if target.is_file() and target.stat().st_mtime >= max(f.stat().st_mtime for f in files):
        return target
    tmp = target.with_name("." + target.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, f.name)
    tmp.replace(target)
    return target


def downloads(run_dir: Path | str | None) -> list[Path]:
    """Every downloadable file of a run: GLB, the OBJ zip, PLY, splat.ply, turntable (those that exist)."""
    if not run_dir or not Path(run_dir).is_dir():
        return []
    run_dir = Path(run_dir)
    files = [run_dir / name for name in SINGLE_FILES[:1] if (run_dir / name).is_file()]
    obj = zip_obj(run_dir)
    if obj is not None:
        files.append(obj)
    files += [run_dir / name for name in SINGLE_FILES[1:] if (run_dir / name).is_file()]
    return files


def run_zip(run_dir: Path | str) -> Path | None:
    """RUN_DIR/<folder name>.zip with every download and config.toml: one file per batch job."""
    run_dir = Path(run_dir)
    files = [f for f in downloads(run_dir) if f.name != OBJ_ZIP] + obj_bundle(run_dir)
    if not files:
        return None
    target = run_dir / f"{run_dir.name}.zip"
    if not target.is_file():
        tmp = target.with_name("." + target.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for f in [*dict.fromkeys(files), run_dir / "config.toml"]:
                if f.is_file():
                    z.write(f, f.name)
        tmp.replace(target)
    return target


def viewer_file(run_dir: Path | str | None) -> Path | None:
    """The mesh the 3D viewer shows (the GLB, else the OBJ)."""
    if not run_dir:
        return None
    for name in ("asset.glb", "asset.obj"):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def turntable_file(run_dir: Path | str | None) -> Path | None:
    """The turntable the page plays: the GIF (an image component shows it; an .mp4 is offered as a download)."""
    if not run_dir:
        return None
    for name in ("turntable.gif",):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def details_markdown(run_dir: Path | str) -> str:
    """The run's prompt, status, settings and metrics as markdown."""
    run_dir = Path(run_dir)
    cfg, status = read_config_dict(run_dir), read_status(run_dir)
    lines = [f"**{cfg.get('prompt', '?')}** — {status.get('status', 'unknown')}", "",
             f"`{run_dir}`", "", settings_line(cfg)]
    if status.get("error"):
        lines += ["", f"error: {status['error']}"]
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        lines += ["", f"{metrics.get('mesh_faces', '?')} faces · {metrics.get('total_seconds', '?')} s"]
    except (OSError, ValueError):
        pass
    return "\n".join(lines)


def export_formats() -> list[str]:
    """The formats `studio export --format` accepts (read from the CLI parser, so they stay in step)."""
    from studio.cli import build_parser

    parser = build_parser()
    for action in parser._subparsers._group_actions:  # noqa: SLF001 - argparse has no public accessor
        sub = action.choices.get("export")
        if sub is not None:
            for a in sub._actions:  # noqa: SLF001
                if "--format" in a.option_strings:
                    return list(a.choices)
    return ["glb", "obj", "ply"]


def export_default(name: str) -> int:
    """The [export] default of `name` (faces, texture_size): what a re-export uses when left unchanged."""
    from studio.config import ExportConfig

    return int(getattr(ExportConfig(), name))
