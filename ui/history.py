"""Run folders as the History and Batch tabs show them, and the files offered for download. Torch-free.

Downloads are whatever asset files exist in a run directory, so formats added by the export pipeline
(textured OBJ with .mtl and texture images, splat.ply, ...) show up without changes here.
"""
from __future__ import annotations

import json
import re
import tomllib
import zipfile
from collections.abc import Callable
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
    """When the run started (YYYY-mm-dd HH:MM:SS, from the folder name; else when its config was written)."""
    thumbnail: Path | None
    """The last preview grid, if any."""
    checkpoint_step: int = 0
    """The step of its checkpoint (0 = none): a cancelled or failed run with one can be resumed."""


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


_STAMP = re.compile(r"-(\d{8})-(\d{6})(?:-\d+)?$")
"""The start time in a run folder's name (studio.rundir.create_run_dir): <slug>-YYYYmmdd-HHMMSS[-n]."""


def started(run_dir: Path) -> str:
    """When the run started, 'YYYY-mm-dd HH:MM:SS' (local time)."""
    m = _STAMP.search(Path(run_dir).name)
    if m:
        d, t = m.groups()
        return f"{d[:4]}-{d[4:6]}-{d[6:]} {t[:2]}:{t[2:4]}:{t[4:]}"
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((Path(run_dir) / "config.toml").stat().st_mtime))


def checkpoint_step(run_dir: Path) -> int:
    """The step of RUN_DIR/checkpoint (0 when it has none)."""
    try:
        return int(json.loads((Path(run_dir) / "checkpoint" / "meta.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def run_dirs(out: Path | str) -> list[Path]:
    """Run folders under `out` (also one level down, e.g. batch folders), newest start first."""
    out = Path(out)
    if not out.is_dir():
        return []
    dirs = [p for p in out.iterdir() if is_run_dir(p)]
    dirs += [q for p in out.iterdir() if p.is_dir() and not is_run_dir(p) for q in p.iterdir() if is_run_dir(q)]
    dirs.sort(key=lambda p: (started(p), p.name), reverse=True)
    return dirs


def list_runs(out: Path | str, limit: int = 200, visible: Callable[[Path], bool] | None = None) -> list[RunRow]:
    """Rows of the run folders under `out` that `visible` accepts (all by default), newest first."""
    rows = []
    for d in run_dirs(out):
        if visible is not None and not visible(d):
            continue
        cfg, status = read_config_dict(d), read_status(d)
        rows.append(RunRow(d, cfg.get("prompt") or status.get("prompt", ""), status.get("status", "unknown"),
                           settings_line(cfg), started(d), thumbnail(d), checkpoint_step(d)))
        if len(rows) == limit:
            break
    return rows


def table(rows: list[RunRow]) -> list[list[str]]:
    """The History table's rows: prompt, status, settings, started, folder name."""
    return [[r.prompt, r.status, r.settings, r.time, r.run_dir.name] for r in rows]


def obj_bundle(run_dir: Path) -> list[Path]:
    """asset.obj and the files it needs: its material libraries and the textures they name."""
    run_dir = Path(run_dir)
    obj = run_dir / "asset.obj"
    if not obj.is_file():
        return []
    files = [obj]
    mtls = _names(obj, r"^\s*mtllib\s+(.+?)\s*$") or [p.name for p in run_dir.glob("asset*.mtl")]
    for name in mtls:
        mtl = _inside(run_dir, name)
        if mtl is not None and mtl not in files:
            files.append(mtl)
            for args in _names(mtl, r"^\s*(?:map_\w+|bump|disp|norm)\s+(.+?)\s*$"):
                path = _inside(run_dir, args.split()[-1])  # the file name comes after any -option values
                if path is not None and path not in files:
                    files.append(path)
    return files


def _inside(run_dir: Path, name: str) -> Path | None:
    """RUN_DIR/name when that is a plain file directly in the run folder; None for anything else (an absolute
    path, '../', a link out of the folder): a .mtl must not get other files packed into a download."""
    path = run_dir / name
    if Path(name).is_absolute() or path.parent.resolve() != run_dir.resolve() or path.is_symlink():
        return None
    return path if path.is_file() else None


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
    lines += ["", f"started {started(run_dir)}"]
    if status.get("note"):
        lines += ["", status["note"]]
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = None
    if metrics:
        faces = metrics.get("export_faces", metrics.get("mesh_faces", "?"))
        lines += ["", f"{faces} faces exported · {metrics.get('total_seconds', '?')} s"]
    step = checkpoint_step(run_dir)
    if step and status.get("status") in ("cancelled", "failed", "running", "unknown"):
        lines += ["", f"checkpoint at step {step}: Resume continues it"]
    return "\n".join(lines)


def export_formats() -> list[str]:
    """The formats `studio export --format` accepts (the export package's registry)."""
    from studio.export import ALL_FORMATS

    return list(ALL_FORMATS)


def export_default(name: str) -> int:
    """The [export] default of `name` (faces, texture_size): what a re-export uses when left unchanged."""
    from studio.config import ExportConfig

    return int(getattr(ExportConfig(), name))
