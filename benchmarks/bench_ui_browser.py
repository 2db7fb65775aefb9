"""The web studio in a real headless Chromium: what an open tab costs, and whether the 3D viewer draws on a busy machine.

    PYTHONPATH=$PWD python benchmarks/bench_ui_browser.py [--tabs 4] [--seconds 20] [--busy 0,4,12]

Starts `studio ui` (embedded model, a 100-step `--defaults` layer as in tests/studio_server.py) and measures:
- page CPU: the CPU time of the Chromium renderer processes per second of wall time, for `--tabs` fresh idle
  tabs, then while one tab follows a run, then with the finished asset in the 3D viewer;
- server CPU per idle tab: the server process's CPU time per second with `--tabs` idle tabs open (no run);
- the viewer under load: with N busy processes (`--busy`), seconds from opening a finished run in History
  until the viewer has drawn 200 pixels of the red cube (or 'never' within `--viewer-timeout`).
Prints markdown table rows with the load average beside each.
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def _spin() -> None:
    while True:
        pass


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def renderers() -> list[psutil.Process]:
    """Chromium's renderer processes (this script -> Playwright's driver -> Chromium -> renderers)."""
    found = []
    for c in psutil.Process().children(recursive=True):
        try:
            if "--type=renderer" in " ".join(c.cmdline()):
                found.append(c)
        except psutil.NoSuchProcess:
            pass
    return found


def cpu_share(procs_fn, seconds: float) -> float:
    """Mean cores used by the processes procs_fn() over `seconds` of wall time."""
    procs = procs_fn()
    c0, t0 = cpu_seconds(procs), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(procs) - c0) / (time.monotonic() - t0)


def red_pixels(page, selector: str) -> int:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((r > 120) & (r > g + 50) & (r > b + 50)).sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tabs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--busy", default="0,4,12", help="numbers of busy processes for the viewer check")
    ap.add_argument("--viewer-timeout", type=float, default=180)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from studio_server import start_server, stop_server

    tmp = Path(tempfile.mkdtemp())
    url, out, proc, log, _ = start_server(tmp)
    server = psutil.Process(proc.pid)
    rows = []

    def row(what: str, value: str) -> None:
        rows.append(f"| {what} | {value} | {os.getloadavg()[0]:.1f} |")
        print(rows[-1], flush=True)

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            tabs = []
            for _ in range(args.tabs):
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                page.goto(url)
                page.locator("#prompt textarea").wait_for()
                tabs.append(page)
            time.sleep(3)
            idle_server = cpu_share(lambda: [server], args.seconds)
            idle_pages = cpu_share(lambda: renderers(), args.seconds)
            row(f"{args.tabs} idle tabs: Chromium renderers, cores per tab", f"{idle_pages / args.tabs:.4f}")
            row(f"{args.tabs} idle tabs: server process, cores per tab", f"{idle_server / args.tabs:.4f}")

            page = tabs[0]
            page.locator("#prompt textarea").fill("a red cube")
            page.locator("#generate").click()
            page.wait_for_function("() => document.querySelector('#status').innerText.includes('Running')",
                                   timeout=300_000)
            following = cpu_share(lambda: renderers(), args.seconds)
            row(f"one tab following a run (+{args.tabs - 1} idle): Chromium renderers, cores", f"{following:.4f}")
            page.wait_for_function("() => document.querySelector('#status').innerText.includes('Finished')",
                                   timeout=900_000, polling=1000)
            deadline = time.monotonic() + args.viewer_timeout
            while red_pixels(page, "#viewer") < 200 and time.monotonic() < deadline:
                time.sleep(1)
            shown = cpu_share(lambda: renderers(), args.seconds)
            row("finished asset in the viewer (+idle tabs): Chromium renderers, cores", f"{shown:.4f}")

            for n in [int(x) for x in args.busy.split(",") if x.strip()]:
                spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
                for s in spinners:
                    s.start()
                time.sleep(5 if n else 0)
                try:
                    view = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                    view.goto(url)
                    view.locator("#prompt textarea").wait_for(timeout=300_000)
                    view.get_by_role("tab", name="History").click()
                    view.locator("#history-run input").click()
                    t0 = time.monotonic()
                    view.get_by_role("option", name="a red cube · finished", exact=False).first.click()
                    view.locator("#history-viewer canvas").wait_for(timeout=300_000)
                    seen = None
                    while time.monotonic() - t0 < args.viewer_timeout:
                        if red_pixels(view, "#history-viewer") >= 200:
                            seen = time.monotonic() - t0
                            break
                        time.sleep(0.5)
                    row(f"viewer draws the cube, {n} busy processes", "never" if seen is None else f"{seen:.1f} s")
                    view.context.close()
                finally:
                    for s in spinners:
                        s.terminate()
            browser.close()
    finally:
        stop_server(proc, log)
    print("\n".join(["| what | value | load |", "|---|---|---|", *rows]))


if __name__ == "__main__":
    main()
