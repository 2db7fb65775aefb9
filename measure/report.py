"""Benchmark results as CSV, JSON, a markdown table with the goals, a bar plot, and a section of a docs page."""
from __future__ import annotations

import csv
import json
import math
import platform
import time
from pathlib import Path

GOALS = {"iou": 0.7, "delta_e": 15.0, "wall_seconds": 60.0}
"""The quality benchmark's goals on the quick preset (issue: 'Benchmarks')."""

COLUMNS = ["key", "combination", "representation", "distillation", "pgc", "shape", "color", "seed", "status",
           "iou", "iou_best_other", "shape_judged", "chamfer", "silhouette_iou", "delta_e", "fronts",
           "wall_seconds", "steps", "steps_per_second", "peak_rss_mb", "error", "run_dir"]


def machine() -> str:
    """One line naming the machine, for every results table."""
    import os

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.machine()}, Python {platform.python_version()}"


def aggregate(rows: list[dict]) -> list[dict]:
    """One summary per combination: means over its captions and seeds, failures counted."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["combination"], []).append(r)
    out = []
    for combo, rs in groups.items():
        ok = [r for r in rs if r["status"] == "finished"]
        mean = lambda k: _mean([r.get(k) for r in ok])  # noqa: E731
        fronts = [r["fronts"] for r in ok if "fronts" in r]
        out.append({"combination": combo, "jobs": len(rs), "failed": len(rs) - len(ok),
                    "iou": mean("iou"), "iou_min": min((r.get("iou", 0.0) for r in ok), default=float("nan")),
                    "shape_right": sum(r.get("shape_judged") == r["shape"] for r in ok),
                    "chamfer": mean("chamfer"), "silhouette_iou": mean("silhouette_iou"),
                    "delta_e": mean("delta_e"), "fronts": fronts, "wall_seconds": mean("wall_seconds"),
                    "steps_per_second": mean("steps_per_second"), "peak_rss_mb": mean("peak_rss_mb")})
    return out


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def markdown(rows: list[dict], title: str, note: str = "") -> str:
    """The summary table (one line per combination) with a ✓/✗ per goal, then the setup."""
    lines = [f"{title}", "", f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. {note}".rstrip(), "",
             "| combination | jobs | 3D IoU (mean / min) | shape right | Chamfer | silhouette IoU | ΔE00 | fronts (house) "
             "| wall s | steps/s | peak MB | goals |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in aggregate(rows):
        ok = [a["iou_min"] >= GOALS["iou"], a["delta_e"] <= GOALS["delta_e"], a["wall_seconds"] <= GOALS["wall_seconds"]]
        marks = "".join("✓" if x else "✗" for x in ok)
        fronts = ",".join(str(f) for f in a["fronts"]) or "–"
        failed = f" ({a['failed']} failed)" if a["failed"] else ""
        lines.append(f"| {a['combination']} | {a['jobs']}{failed} | {a['iou']:.2f} / {a['iou_min']:.2f} | "
                     f"{a['shape_right']}/{a['jobs'] - a['failed']} | {a['chamfer']:.3f} | {a['silhouette_iou']:.2f} | "
                     f"{a['delta_e']:.1f} | {fronts} | {a['wall_seconds']:.0f} | {a['steps_per_second']:.1f} | "
                     f"{a['peak_rss_mb']:.0f} | {marks} |")
    lines += ["", f"Goals (✓/✗ in that order): every job's 3D IoU ≥ {GOALS['iou']}, mean ΔE00 ≤ {GOALS['delta_e']:.0f}, "
              f"mean wall time ≤ {GOALS['wall_seconds']:.0f} s. 'fronts' is the house's multi-face score (truth: 1)."]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict], out: Path, stem: str) -> list[Path]:
    """OUT/<stem>.csv and OUT/<stem>.json (all rows)."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / f"{stem}.csv", out / f"{stem}.json"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    json_path.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    return [csv_path, json_path]


def bar_plot(rows: list[dict], path: Path, key: str = "iou", goal: float | None = GOALS["iou"]) -> Path:
    """Horizontal bars of the mean `key` per combination (pillow only), with the goal as a line."""
    from PIL import Image, ImageDraw

    aggs = aggregate(rows)
    label_w, bar_w, row_h, pad = 260, 360, 22, 10
    img = Image.new("RGB", (label_w + bar_w + 3 * pad + 40, pad * 3 + row_h * (len(aggs) + 1)), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, pad), f"mean {key} per combination (0..1)", fill="black")
    for i, a in enumerate(aggs):
        y = pad * 2 + row_h * (i + 1)
        v = a[key] if not math.isnan(a[key]) else 0.0
        d.text((pad, y + 4), a["combination"][:40], fill="black")
        color = (60, 150, 80) if goal is None or v >= goal else (200, 90, 60)
        d.rectangle([label_w, y + 3, label_w + int(bar_w * max(0.0, min(v, 1.0))), y + row_h - 3], fill=color)
        d.text((label_w + bar_w + pad, y + 4), f"{v:.2f}", fill="black")
    if goal is not None:
        x = label_w + int(bar_w * goal)
        d.line([x, pad * 2 + row_h, x, img.height - pad], fill=(0, 0, 0), width=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def splice(doc: Path, marker: str, text: str) -> None:
    """Replace what lies between `<!-- marker:begin -->` and `<!-- marker:end -->` in `doc` (appended if absent)."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    body = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in body and end in body:
        head, rest = body.split(begin, 1)
        body = head + block + rest.split(end, 1)[1]
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    doc.write_text(body)
