"""The studio's HTTP API for scripts (docs/ui.md#http-api), used the two ways docs/ui.md shows: Python's
gradio_client and plain HTTP (what the curl example sends), against a real `studio ui` server with two accounts
(one from STUDIO_AUTH, one from --auth-file). Covered: submit, poll until finished, download the GLB and read it
back; cancel; bad input as one clear error; a user who cannot poll, cancel or download another user's job; no
answer without a login."""
import http.cookiejar
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import trimesh

from studio_server import start_server, stop_server

pytestmark = [pytest.mark.slow]

ALICE, BOB = ("alice", "pw-alice"), ("bob", "pw-bob")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    (tmp / "users.txt").write_text(f"# accounts\n{BOB[0]}:{BOB[1]}\n")
    url, out, proc, log, log_path = start_server(tmp, "--auth-file", str(tmp / "users.txt"),
                                                 env={"STUDIO_AUTH": f"{ALICE[0]}:{ALICE[1]}"})
    yield url, out, log_path
    stop_server(proc, log)


def client(url, user):
    from gradio_client import Client

    return Client(url, auth=user, verbose=False)


def submit(c, prompt="a red cube", steps=20, overrides="") -> dict:
    return c.predict(prompt, steps, 0, "", "", "", overrides, api_name="/submit")


def wait_for(c, job: str, done=("finished", "failed", "cancelled"), timeout=600) -> list[dict]:
    """Poll /status until the job is done; every distinct answer on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        s = c.predict(job, api_name="/status")
        if not seen or (s["status"], s["step"], s["export_stage"]) != (seen[-1]["status"], seen[-1]["step"],
                                                                      seen[-1]["export_stage"]):
            seen.append(s)
        if s["status"] in done:
            return seen
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.5)


def test_python_client_submit_poll_download_and_privacy(server, tmp_path):
    from gradio_client.exceptions import AppError

    url, out, _ = server
    alice = client(url, ALICE)
    answer = submit(alice, "a red cube")
    job = answer["job"]
    assert answer["status"] == "queued" and answer["warnings"] == []
    seen = wait_for(alice, job)
    last = seen[-1]
    assert last["status"] == "finished", last
    assert last["step"] == last["total"] == 20
    assert "asset.glb" in last["files"] and (out / last["run"] / "asset.glb").exists()
    assert any(s["status"] == "exporting" and s["export_stage"] for s in seen) or len(seen) < 3, seen

    path = alice.predict(job, "asset.glb", api_name="/download")
    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.faces) > 0
    with pytest.raises(AppError, match="has no file 'nope.txt'"):
        alice.predict(job, "nope.txt", api_name="/download")

    bob = client(url, BOB)
    for endpoint, args in (("/status", (job,)), ("/cancel", (job,)), ("/download", (job, "asset.glb"))):
        with pytest.raises(AppError, match="no job .* of yours"):
            bob.predict(*args, api_name=endpoint)


def test_bad_input_is_one_clear_error_and_nothing_is_queued(server):
    from gradio_client.exceptions import AppError

    url, out, _ = server
    alice = client(url, ALICE)
    before = set(out.iterdir()) if out.exists() else set()
    with pytest.raises(AppError, match="above this server's limit.*--max-steps"):
        submit(alice, steps=10**9)
    with pytest.raises(AppError, match="prompt"):
        submit(alice, prompt="   ")
    with pytest.raises(AppError, match="no job 'j-none' of yours"):
        alice.predict("j-none", api_name="/status")
    assert (set(out.iterdir()) if out.exists() else set()) == before
    warned = submit(alice, prompt="a ceramic mug", steps=5)
    assert any("ceramic" in w or "mug" in w for w in warned["warnings"]), warned
    assert alice.predict(warned["job"], api_name="/cancel") == {"cancelled": True}
    assert wait_for(alice, warned["job"])[-1]["status"] == "cancelled"


def http_session(url, user=None):
    """A urllib opener with a cookie jar, logged in as `user` through the /login form (as curl -c jar)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    if user:
        form = urllib.parse.urlencode({"username": user[0], "password": user[1]}).encode()
        opener.open(urllib.request.Request(url + "login", data=form))
    return opener


def call(opener, url, endpoint: str, *data):
    """POST /gradio_api/call/ENDPOINT, then read its event stream: the `complete` data, or raise on `error`."""
    body = json.dumps({"data": list(data)}).encode()
    req = urllib.request.Request(f"{url}gradio_api/call/{endpoint}", data=body,
                                 headers={"Content-Type": "application/json"})
    event_id = json.load(opener.open(req))["event_id"]
    stream = opener.open(f"{url}gradio_api/call/{endpoint}/{event_id}").read().decode()
    event = None
    for line in stream.splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event in ("complete", "error"):
            payload = json.loads(line[6:])
            if event == "error":
                raise RuntimeError(payload)
            return payload
    raise AssertionError(stream)


def test_plain_http_as_the_curl_example(server, tmp_path):
    url, out, _ = server
    with pytest.raises(urllib.error.HTTPError) as no_login:
        call(http_session(url), url, "status", "j-1")
    assert no_login.value.code == 401

    web = http_session(url, ALICE)
    job = call(web, url, "submit", "a red cube", 10, 0, "", "", "", "")[0]["job"]
    deadline = time.monotonic() + 600
    while (s := call(web, url, "status", job)[0])["status"] not in ("finished", "failed", "cancelled"):
        assert time.monotonic() < deadline, s
        time.sleep(1)
    assert s["status"] == "finished", s
    file = call(web, url, "download", job, "asset.glb")[0]
    glb = tmp_path / "asset.glb"
    glb.write_bytes(web.open(file["url"]).read())
    assert len(trimesh.load(glb, force="mesh").faces) > 0

    # bob has the link but not the right to it
    bob = http_session(url, BOB)
    with pytest.raises(urllib.error.HTTPError) as denied:
        bob.open(file["url"])
    assert denied.value.code == 404
