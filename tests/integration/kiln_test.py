"""Kiln integration-test harness: a small HTTP client for the real stack
(nginx -> kiln-api -> MariaDB), helpers to make organizations and tokens
through kilnctl, and a runner that prints one line per test and the closing
'N passed, N failed' line."""

import http.client
import json
import os
import subprocess
import sys
import time
import traceback
import urllib.parse

ENV = {}


def load_env(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                ENV[k] = v
    u = urllib.parse.urlparse(ENV["KILN_URL"])
    ENV["host"], ENV["port"] = u.hostname, u.port


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode())

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


def request(method, path, body=None, token=None, headers=None, raw=None, timeout=30):
    conn = http.client.HTTPConnection(ENV["host"], ENV["port"], timeout=timeout)
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    data = None
    if raw is not None:
        data = raw
    elif body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def kilnctl(*args, check=True):
    binary = os.path.join(ENV["KILN_BUILD"], "bin", "kilnctl")
    p = subprocess.run([binary, "--config", ENV["KILN_CONFIG"], *args],
                       capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError("kilnctl %s failed: %s" % (" ".join(args), p.stderr))
    return p


_counter = [0]


def unique(prefix):
    _counter[0] += 1
    return "%s-%d-%d" % (prefix, os.getpid() % 10000, _counter[0])


def new_org():
    slug = unique("org")
    kilnctl("org", "create", slug, "Org " + slug)
    token = kilnctl("token", "create", slug, "--name", "tests").stdout.strip()
    return slug, token


def new_app(token, files=None):
    slug = unique("app")
    r = request("POST", "/admin/apps", {"name": "App " + slug, "slug": slug}, token=token)
    assert r.status == 201, r
    app = r.json()
    if files:
        r = request("POST", "/admin/apps/%d/revisions" % app["id"], {"files": files}, token=token)
        assert r.status == 201, r
        app = request("GET", "/admin/apps/%d" % app["id"], token=token).json()
    return app


def expect_error(r, status, code=None):
    assert r.status == status, "want %d, got %r" % (status, r)
    body = r.json()
    assert "error" in body and "code" in body["error"] and "message" in body["error"], body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def eventually(fn, timeout=20, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            v = fn()
            if v:
                return v
        except AssertionError as e:  # keep the last failure for the message
            last = e
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (%s)" % (what, last))


def visible_text(evs):
    """What a client shows of each model response (by message_index): a
    delta with "restart" drops that response's text so far."""
    shown = {}
    for e in evs:
        if e["type"] == "assistant.delta":
            p = e["payload"]
            if p.get("restart"):
                shown[p["message_index"]] = ""
            shown[p["message_index"]] = shown.get(p["message_index"], "") + p["text"]
    return shown


def set_app_profile(app_id, doc):
    """A per-app agent profile (<state>/profiles/app-<id>.json)."""
    d = os.path.join(ENV["KILN_STATE"], "profiles")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "app-%d.json" % app_id), "w") as f:
        json.dump(doc, f)


def stack(*args):
    subprocess.run([os.path.join(ENV["ROOT"], "tools", "stack"), args[0], ENV["KILN_STATE"], *args[1:]],
                   check=True, timeout=120, capture_output=True)


def api_restart(**env):
    """Restarts kiln-api (tools/stack api-restart) with env added to the
    environment, e.g. KILN_CRASH_POINT="ckpt_write:3" to arm a crash point in
    every worker; without arguments the workers run unarmed again."""
    e = {k: v for k, v in os.environ.items() if k != "KILN_CRASH_POINT"}
    e.update(env)
    subprocess.run([os.path.join(ENV["ROOT"], "tools", "stack"), "api-restart", ENV["KILN_STATE"]],
                   check=True, timeout=120, capture_output=True, env=e)


def run_tests(modules, only=None):
    passed = failed = 0
    for mod in modules:
        for name in sorted(n for n in dir(mod) if n.startswith("test_")):
            if only and only not in name and only not in mod.__name__:
                continue
            t0 = time.time()
            try:
                getattr(mod, name)()
                passed += 1
                print("ok   %s.%s (%.1fs)" % (mod.__name__, name, time.time() - t0), flush=True)
            except Exception:
                failed += 1
                print("FAIL %s.%s (%.1fs)" % (mod.__name__, name, time.time() - t0), flush=True)
                traceback.print_exc(file=sys.stdout)
    return passed, failed
