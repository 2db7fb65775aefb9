"""Take docs/images/ui.png: serve the studio, generate with the embedded model through a real Chromium from a
fresh page (the prompt typed, nothing else touched), and screenshot the Generate tab once the asset is finished.
The server gets a `--defaults`-style layer (steps, preview and export sizes) as a demo server would.

    PYTHONPATH=$PWD .venv/bin/python scripts/ui_screenshot.py [--steps 150] [--out /tmp/ui-shot]
"""
from __future__ import annotations

import argparse
import shutil
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", default="a red cube")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default="/tmp/ui-shot")
    ap.add_argument("--image", default=str(ROOT / "docs" / "images" / "ui.png"))
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from ui.server import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    layer = {"steps": args.steps, "log": {"preview_every": 25},
             "export": {"mesh_resolution": 96, "turntable_size": 160}}
    demo, url = launch(port=port, out=args.out, base=(layer,), block=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1440, "height": 1250})
        page.set_default_timeout(1_800_000)
        page.goto(url)
        page.locator("#prompt textarea").fill(args.prompt)
        page.locator("#generate").click()
        t0 = time.time()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('Finished')", polling=1000)
        print(f"finished in {time.time() - t0:.0f} s")
        page.locator("#viewer canvas").wait_for()
        time.sleep(3)  # let the viewer draw
        page.screenshot(path=args.image, full_page=True)
        browser.close()
    demo.close()
    print(args.image)


if __name__ == "__main__":
    main()
