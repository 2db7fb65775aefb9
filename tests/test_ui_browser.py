"""The web studio as a person uses it: a real `studio ui` server on loopback, driven by Debian's headless
Chromium through Playwright. Generate with a few steps, watch the progress move, see the 3D viewer,
download the GLB and load it; a second user waits in the queue and sees only their own run; stop a run
mid-way; find both runs in History."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trimesh

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FAST = ("camera.resolution = 32\nexport.mesh_resolution = 32\nexport.turntable_frames = 4\n"
        "export.turntable_size = 32\nlog.preview_every = 2\nrepresentation.density_bias = 0.0")
"""Advanced box: 32 px, small mesh and turntable, a preview every 2 steps, a solid start (always a surface)."""
WAIT_MS = 240_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`studio ui` in a subprocess: (url, output folder)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (apt-get install -y chromium; .ci/run installs it)")
    out = tmp_path_factory.mktemp("ui-out")
    port = free_port()
    log = open(out.parent / "server.log", "w")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "ui", "--port", str(port), "--out", str(out)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"studio ui did not start: {(out.parent / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, out
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--use-gl=swiftshader"])
        yield b
        b.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.locator("#prompt textarea").wait_for()
    return page


def fill_form(page, prompt: str, steps: int) -> None:
    """What a person types: prompt, the small random model as a hub id, steps, advanced overrides."""
    page.locator("#prompt textarea").fill(prompt)
    page.get_by_role("radio", name="Hub id").check()
    page.locator("#model-path textarea").fill("tiny-random")
    page.locator("#steps input").fill(str(steps))
    if not page.locator("#advanced textarea").is_visible():
        page.get_by_text("Advanced: TOML overrides").click()
    page.locator("#advanced textarea").fill(FAST)


def status(page) -> str:
    return page.locator("#status").inner_text()


def wait_status(page, word: str, timeout: float = WAIT_MS / 1000) -> list[str]:
    """Poll until the status line contains `word`; returns every progress label seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while word not in status(page):
        assert time.monotonic() < deadline, f"waited for {word!r}; status is {status(page)!r}"
        assert "Failed" not in status(page), page.locator("#log textarea").input_value()
        label = page.locator("#progress .studio-step").first
        if label.count():
            seen.append(label.inner_text())
        time.sleep(0.2)
    return seen


def test_generate_watch_download_stop_and_history(server, browser, tmp_path):
    url, out = server
    page = open_page(browser, url)

    # bad input is a readable message in the page, not a traceback
    page.locator("#prompt textarea").fill("a red cube")
    page.get_by_text("Advanced: TOML overrides").click()
    page.locator("#advanced textarea").fill("camera.fovv = 3")
    page.locator("#generate").click()
    page.get_by_text("unknown key 'camera.fovv'").wait_for()
    assert "Traceback" not in page.locator("#message").inner_text()

    # generate: the progress moves, the preview and the 3D viewer appear
    fill_form(page, "a red cube", steps=6)
    page.locator("#generate").click()
    seen = wait_status(page, "Finished")
    steps_seen = {s.split("/")[0] for s in seen if "/" in s}
    assert len(steps_seen - {"0"}) >= 1 and page.locator("#progress .studio-step").inner_text() == "6/6", seen
    page.locator("#viewer canvas").wait_for()
    page.locator("#preview img").wait_for()
    assert "loss" in page.locator("#log textarea").input_value()

    # download the GLB and load it
    with page.expect_download() as dl:
        page.locator("#downloads a[download='asset.glb']").click()
    glb = tmp_path / "downloaded.glb"
    dl.value.save_as(glb)
    mesh = trimesh.load(glb, force="mesh")
    assert len(mesh.faces) > 0
    names = {a.get_attribute("download") for a in page.locator("#downloads a[download]").all()}
    assert names >= {"asset.glb", "asset-obj.zip", "asset.ply", "turntable.gif"}, names

    # a long run; a second user queues behind it and sees only their own run
    fill_form(page, "a long blue sphere", steps=2000)
    page.locator("#generate").click()
    wait_status(page, "Running")
    other = open_page(browser, url)
    assert status(other).startswith("No run yet")
    fill_form(other, "a green cone", steps=2)
    other.locator("#generate").click()
    wait_status(other, "position 1")
    assert "long blue sphere" not in other.locator("#log textarea").input_value()

    # stop it mid-way: cancelled, and the waiting user's run goes ahead
    while int(page.locator("#progress .studio-step").inner_text().split("/")[0]) < 2:
        time.sleep(0.2)
    page.locator("#stop").click()
    wait_status(page, "Cancelled", timeout=60)
    stopped_at = int(status(page).split("step ")[1].split("/")[0])
    assert 2 <= stopped_at < 2000
    wait_status(other, "Finished")
    cancelled_dir = next(p for p in out.iterdir() if p.name.startswith("a-long-blue-sphere"))
    assert json.loads((cancelled_dir / "status.json").read_text())["status"] == "cancelled"

    # both runs (and the other user's) are in History; open the finished one in the viewer
    page.get_by_role("tab", name="History").click()
    table = page.locator("#history-table")
    page.wait_for_function("() => document.querySelector('#history-table').innerText.includes('a long blue sphere')")
    text = table.inner_text()
    assert "a red cube" in text and "finished" in text and "cancelled" in text and "a green cone" in text
    page.locator("#history-run input").click()
    page.get_by_role("option", name="a red cube · finished", exact=False).first.click()
    page.locator("#history-viewer canvas").wait_for()
    page.locator("#history-files a[download='asset.glb']").wait_for()


def test_batch_reexport_and_run_again(server, browser):
    from playwright.sync_api import expect

    url, out = server
    page = open_page(browser, url)
    fill_form(page, "unused", steps=2)  # pasted batch prompts take the Generate tab's settings

    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-prompts textarea").fill("a small cube\n# a comment\na small ball\n")
    page.locator("#batch-run").click()
    page.get_by_text("Queued 2 job(s).").wait_for()
    page.wait_for_function("() => (document.querySelector('#batch-table').innerText.match(/finished/g) || []).length == 2")
    zips = {a.get_attribute("download") for a in page.locator("#batch-files a[download]").all()}
    assert len(zips) == 2 and all(z.startswith(("a-small-cube-", "a-small-ball-")) for z in zips), zips

    # History: re-export a run as OBJ with the CLI's export function, then run it again
    page.get_by_role("tab", name="History").click()
    page.locator("#history-run input").click()
    page.get_by_role("option", name="a small ball · finished", exact=False).first.click()
    page.locator("#history-files a[download='asset.glb']").wait_for()
    ball = next(p for p in out.rglob("a-small-ball-*") if p.is_dir())
    (ball / "asset.obj").unlink()
    page.locator("#history-format input").click()
    page.get_by_role("option", name="obj", exact=True).click()
    page.locator("#history-reexport").click()
    page.get_by_text("Wrote").wait_for()
    assert (ball / "asset.obj").is_file()
    page.locator("#history-files a[download='asset-obj.zip']").wait_for()
    page.locator("#history-again").click()
    expect(page.get_by_role("tab", name="Generate")).to_have_attribute("aria-selected", "true")
    wait_status(page, "Finished")
    again = sorted(p for p in out.rglob("a-small-ball-*") if p.is_dir())
    assert len(again) == 2 and (again[0] / "config.toml").read_text() == (again[1] / "config.toml").read_text()
