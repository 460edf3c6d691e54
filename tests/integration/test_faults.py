"""Faults that take under a minute each: runners killed at random moments,
MariaDB restarted mid-run, a stream process killed mid-stream. The long
versions live in tools/soak."""

import json
import os
import random
import signal
import subprocess
import time

from kiln_test import ENV, eventually, new_app, new_org, request, stack, visible_text

TERMINAL = ("completed", "failed", "cancelled")
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "scripts")


def start_run(token, app_id, text):
    r = request("POST", "/admin/apps/%d/coding-agent/runs" % app_id, {"input": text}, token=token)
    assert r.status == 202, r
    return r.json()["id"]


def events(token, app_id, run_id):
    out, after = [], 0
    while True:
        page = request("GET", "/admin/apps/%d/coding-agent/runs/%d/events?after=%d&limit=1000"
                       % (app_id, run_id, after), token=token).json()
        out += page["items"]
        if not page["items"]:
            return out
        after = page["items"][-1]["seq"]


def assert_run_log_sound(token, app_id, run_id):
    evs = events(token, app_id, run_id)
    seqs = [e["seq"] for e in evs]
    assert seqs == list(range(1, len(seqs) + 1)), "gaps or duplicates: %r" % seqs
    terminal = [e for e in evs if e["type"] in ("run.completed", "run.failed")]
    assert len(terminal) == 1 and evs[-1] is terminal[0], [e["type"] for e in evs]
    run = request("GET", "/admin/apps/%d/coding-agent/runs/%d" % (app_id, run_id), token=token).json()
    assert run["status"] in TERMINAL, run
    if run["status"] == "completed" and terminal[0]["payload"].get("changed"):
        # the revision it names exists and its checkpoint is readable
        rev = request("GET", "/admin/apps/%d/revisions/%d" % (app_id, run["revision_id"]), token=token)
        assert rev.status == 200, rev
    return run


def wait_terminal(token, app_id, run_id, timeout=90):
    return eventually(lambda: request("GET", "/admin/apps/%d/coding-agent/runs/%d" % (app_id, run_id),
                                      token=token).json()["status"] in TERMINAL,
                      timeout=timeout, interval=0.3, what="run %d to end" % run_id)


def test_runners_killed_at_random_moments_lose_nothing():
    _, token = new_org()
    apps = [new_app(token, {"index.html": "<h1>%d</h1>" % i}) for i in range(4)]
    scripts = ["default", "slow-tools", "echo-tools", "default"]
    runs = [(a["id"], start_run(token, a["id"], "[script:%s] go" % s)) for a, s in zip(apps, scripts)]
    rnd = random.Random(7)
    try:
        for _ in range(6):
            time.sleep(rnd.uniform(0.3, 1.5))
            stack("kill-runner")
            stack("start-runner")
    finally:
        stack("start-runner")
    for app_id, run_id in runs:
        wait_terminal(token, app_id, run_id, timeout=120)
        run = assert_run_log_sound(token, app_id, run_id)
        assert run["status"] in ("completed", "failed"), run
        if run["status"] == "failed":
            assert run["error"]["code"] == "runner_lost", run
    out = subprocess.run([os.path.join(ENV["KILN_BUILD"], "bin", "kilnctl"), "--config", ENV["KILN_CONFIG"],
                          "checkpoint", "verify"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def assert_event_log_complete(evs, script):
    """No write the run made was lost: every tool.started has exactly one
    outcome, no call starts twice, and the text of every response the run
    finished is the model's text."""
    started = [e["payload"]["call_id"] for e in evs if e["type"] == "tool.started"]
    ended = [e["payload"]["call_id"] for e in evs if e["type"] in ("tool.completed", "tool.failed")]
    assert len(set(started)) == len(started) and sorted(started) == sorted(ended), (started, ended)
    with open(os.path.join(SCRIPTS, script + ".json")) as f:
        steps = json.load(f)["steps"]
    shown = visible_text(evs)
    done = evs[-1]["type"] == "run.completed"
    for i, step in enumerate(steps):
        if done:
            assert shown.get(i) == step["text"], (i, shown.get(i))
        elif i in shown:
            assert step["text"].startswith(shown[i]), (i, shown[i])


def test_mariadb_restarted_mid_run():
    _, token = new_org()
    for when in ("the text", "the tool call"):
        app = new_app(token, {"index.html": "<h1>db</h1>"})
        run_id = start_run(token, app["id"], "[script:slow-tools] keep going")
        if when == "the text":  # appends of deltas meet the outage
            eventually(lambda: len(events(token, app["id"], run_id)) > 5, what="the text to stream")
        stack("restart-db")
        eventually(lambda: request("GET", "/admin/health").status == 200, timeout=30, what="health")
        wait_terminal(token, app["id"], run_id, timeout=120)
        run = assert_run_log_sound(token, app["id"], run_id)
        evs = events(token, app["id"], run_id)
        assert_event_log_complete(evs, "slow-tools")
        # it ended cleanly: completed, or failed with a reason
        assert run["status"] == "completed" or (run["status"] == "failed" and run["error"]["code"]), run


def _stream_pids():
    master = int(open(os.path.join(ENV["KILN_STATE"], "run", "kiln-api.pid")).read())
    kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    # stream processes are the multi-threaded children
    return [int(p) for p in kids if len(os.listdir("/proc/%s/task" % p)) > 1]


def test_stream_process_killed_mid_stream_client_sees_end_then_resumes():
    import http.client
    _, token = new_org()
    app = new_app(token, {"index.html": "<h1>s</h1>"})
    run_id = start_run(token, app["id"], "[script:slow-tools] keep going")
    path = "/admin/apps/%d/coding-agent/runs/%d/stream" % (app["id"], run_id)
    conn = http.client.HTTPConnection(ENV["host"], ENV["port"], timeout=20)
    conn.request("GET", path, headers={"Authorization": "Bearer " + token})
    resp = conn.getresponse()
    assert resp.status == 200
    seen = []
    deadline = time.time() + 20
    while len(seen) < 3 and time.time() < deadline:
        line = resp.readline().decode()
        if line.startswith("id:"):
            seen.append(int(line[3:]))
    before = _stream_pids()
    assert before, "no stream process found"
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    try:
        while resp.readline():
            pass  # the stream ends (no hang) once its process is gone
    except OSError:
        pass
    assert time.time() - t0 < 15, "the client hung after its stream process died"
    conn.close()
    eventually(lambda: _stream_pids() and set(_stream_pids()) != set(before), what="stream process respawned")
    # resume after the last id seen: exactly the rest
    conn = http.client.HTTPConnection(ENV["host"], ENV["port"], timeout=60)
    conn.request("GET", path, headers={"Authorization": "Bearer " + token, "Last-Event-ID": str(seen[-1])})
    resp = conn.getresponse()
    rest = []
    for raw in resp:
        line = raw.decode()
        if line.startswith("id:"):
            rest.append(int(line[3:]))
    conn.close()
    assert rest and rest[0] == seen[-1] + 1 and rest == list(range(rest[0], rest[0] + len(rest))), rest
    wait_terminal(token, app["id"], run_id)
    assert_run_log_sound(token, app["id"], run_id)


def test_cancel_of_a_run_whose_runner_is_gone_ends_it_at_once():
    _, token = new_org()
    app = new_app(token, {"index.html": "<h1>c</h1>"})
    run_id = start_run(token, app["id"], "[script:slow-tools] keep going")
    eventually(lambda: len(events(token, app["id"], run_id)) > 2, what="the run to start")
    stack("kill-runner")
    try:
        lease = float(os.environ.get("KILN_RUNNER_LEASE_S", "4"))
        time.sleep(lease + 0.5)  # the lease lapses: no runner holds the run
        r = request("POST", "/admin/apps/%d/coding-agent/runs/%d/cancel" % (app["id"], run_id),
                    {"mode": "keep"}, token=token)
        assert r.status == 202, r
        assert r.json()["status"] == "cancelled", r.json()
    finally:
        stack("start-runner")
    time.sleep(1.0)  # a runner back on duty must not pick it up again
    run = assert_run_log_sound(token, app["id"], run_id)
    assert run["status"] == "cancelled" and run["error"]["code"] == "cancelled", run
