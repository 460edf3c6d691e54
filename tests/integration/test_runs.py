"""Coding-agent runs end to end: the real HTTP API behind nginx, the real
kiln-runner and the scripted model. Streams are read line by line over
http.client, so what is checked is what a browser's EventSource would see."""

import fcntl
import glob
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time

from kiln_test import (ENV, eventually, expect_error, new_app, new_org, request,
                       set_app_profile, stack, unique, visible_text)

ORG = {}
TERMINAL = ("run.completed", "run.failed")
ENVELOPE_KEYS = {"type", "run_id", "app_id", "seq", "ts", "payload"}
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "scripts")


def org():
    if not ORG:
        ORG["slug"], ORG["token"] = new_org()
    return ORG["token"]


def runs_path(app_id, run_id=None, tail=""):
    p = "/admin/apps/%d/coding-agent/runs" % app_id
    if run_id is not None:
        p += "/%d" % run_id
    return p + tail


def start_run(token, app_id, text, crid=None, expect=202):
    body = {"input": text}
    if crid is not None:
        body["client_request_id"] = crid
    r = request("POST", runs_path(app_id), body, token=token)
    assert r.status == expect, r
    return r.json()


def get_run(token, app_id, run_id):
    r = request("GET", runs_path(app_id, run_id), token=token)
    assert r.status == 200, r
    return r.json()


def wait_run(token, app_id, run_id, timeout=30):
    return eventually(lambda: (lambda run: run if run["status"] not in ("queued", "running") else None)(
        get_run(token, app_id, run_id)), timeout=timeout, interval=0.1, what="run %d to end" % run_id)


def cancel(token, app_id, run_id, mode=None):
    return request("POST", runs_path(app_id, run_id, "/cancel"), {"mode": mode} if mode else {}, token=token)


def api_events(token, app_id, run_id, after=0, limit=100):
    """Every event after `after` through the JSON pages, checking the paging."""
    out = []
    while True:
        r = request("GET", runs_path(app_id, run_id, "/events?after=%d&limit=%d" % (after, limit)), token=token)
        assert r.status == 200, r
        page = r.json()
        assert len(page["items"]) <= limit, page
        out += page["items"]
        if page["items"]:
            assert page["next_after"] == page["items"][-1]["seq"], page
        else:
            assert page["next_after"] == after, page
        if page["terminal"] or not page["items"]:
            return out, page["terminal"]
        after = page["next_after"]


def sql(query):
    sock = os.path.join(ENV["KILN_STATE"], "run", "mysql.sock")
    p = subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-N", "-B", "kiln", "-e", query],
                       capture_output=True, text=True, timeout=30, check=True)
    return [line.split("\t") for line in p.stdout.splitlines()]


class Stream:
    """One SSE connection. next() answers the next event (a dict with the
    frame's id, event, parsed data and arrival time), or None once the
    server ended the response; comments are kept in .comments."""

    def __init__(self, token, app_id, run_id, last_event_id=None, query="", timeout=20, deadline=60):
        # Keep-alive comments defeat the socket timeout; the deadline ends a
        # test whose run never ends.
        self.deadline = time.time() + deadline
        self.conn = http.client.HTTPConnection(ENV["host"], ENV["port"], timeout=timeout)
        h = {"Authorization": "Bearer " + token, "Accept": "text/event-stream"}
        if last_event_id is not None:
            h["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", runs_path(app_id, run_id, "/stream") + query, headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.comments = []
        self.ended = False

    def header(self, name):
        return self.resp.getheader(name)

    def next(self, stop_on_comment=False):
        fields = {}
        while True:
            assert time.time() < self.deadline, "the stream is still open at its deadline"
            line = self.resp.readline()
            if not line:
                self.ended = time.time()
                assert not fields, "stream ended inside a frame: %r" % fields
                return None
            assert line.endswith(b"\n"), "a frame line without its newline: %r" % line
            line = line[:-1].decode("utf-8")
            if line == "":
                if "data" in fields:
                    fields["data"] = json.loads(fields["data"])
                    fields["t"] = time.time()
                    return fields
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append((time.time(), line))
                if stop_on_comment:
                    return {"comment": line}
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            assert name in ("id", "event", "data", "retry"), "unexpected field %r" % line
            assert name not in fields, "field %s twice in one frame" % name
            fields[name] = value

    def read(self, n):
        out = []
        while len(out) < n:
            ev = self.next()
            assert ev is not None, "stream ended after %d of %d events" % (len(out), n)
            out.append(ev)
        return out

    def read_to_end(self):
        out = []
        while True:
            ev = self.next()
            if ev is None:
                return out
            out.append(ev)

    def close(self):
        self.conn.close()


def check_frame(ev, run_id, app_id):
    d = ev["data"]
    assert set(d) == ENVELOPE_KEYS, d
    assert d["run_id"] == run_id and d["app_id"] == app_id, d
    assert ev["id"] == str(d["seq"]), ev
    assert ev["event"] == d["type"], ev
    assert TS_RE.match(d["ts"]), d
    assert isinstance(d["payload"], dict), d


def check_gapless(events, first=1):
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, first + len(seqs))), seqs


def types(events):
    return [e["type"] for e in events]


def stream_all(token, app_id, run_id, **kw):
    s = Stream(token, app_id, run_id, **kw)
    assert s.status == 200, s.status
    evs = s.read_to_end()
    s.close()
    for ev in evs:
        check_frame(ev, run_id, app_id)
    return [ev["data"] for ev in evs]


def script_step_files(name, turn=0):
    with open(os.path.join(SCRIPTS, name + ".json")) as f:
        doc = json.load(f)
    steps = doc["turns"][turn] if "turns" in doc else doc["steps"]
    files = {}
    for step in steps:
        for call in step.get("tool_calls", []):
            if call["name"] == "write_file":
                files[call["arguments"]["path"]] = call["arguments"]["content"]
    return files


def runner_pids():
    """The pids of this stack's runners (from their pid files)."""
    pids = []
    for f in glob.glob(os.path.join(ENV["KILN_STATE"], "run", "kiln-runner-*.pid")):
        with open(f) as fh:
            pids.append(int(fh.read().strip()))
    return pids


def runner_descendants(pattern):
    """Pids of processes under this stack's runners whose command line
    contains pattern (other stacks on the machine are not ours)."""
    roots = set(runner_pids())
    parent, cmd = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as fh:
                st = fh.read()
            with open("/proc/%s/cmdline" % d, "rb") as fh:
                cmd[int(d)] = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parent[int(d)] = int(st[st.rindex(")") + 2:].split()[1])
    out = []
    for pid, c in cmd.items():
        if pattern not in c or c.startswith("/usr/bin/bwrap"):
            continue
        p = parent.get(pid)
        while p and p not in roots and p != 1:
            p = parent.get(p)
        if p in roots:
            out.append(pid)
    return out


def secret_free(*texts):
    key = os.environ.get("KILN_MODEL_API_KEY")
    for t in texts:
        if key:
            assert key not in t, "the model API key leaked: %s" % t[:300]
        assert "Bearer " not in t and "Authorization" not in t, t[:300]


# ---- a whole run ----------------------------------------------------------


def test_run_end_to_end_stream_run_files_and_event_pages():
    token = org()
    app = new_app(token)
    text = "[script:default] Build a landing page %s" % unique("n")
    t0 = time.time()
    run = start_run(token, app["id"], text)
    assert run["status"] == "queued" and run["app_id"] == app["id"] and run["input"] == text, run
    assert run["attempt"] == 0 and run["revision_id"] is None and run["error"] is None, run
    assert run["stream_url"] == runs_path(app["id"], run["id"], "/stream"), run
    assert run["events_url"] == runs_path(app["id"], run["id"], "/events"), run
    assert get_run(token, app["id"], run["id"])["status"] in ("queued", "running")

    s = Stream(token, app["id"], run["id"])
    assert s.status == 200
    frames = s.read_to_end()  # returns only because the server ended the response
    s.close()
    assert s.ended - frames[-1]["t"] < 1, "the response lingered after the terminal event"
    assert time.time() - t0 < 25
    for ev in frames:
        check_frame(ev, run["id"], app["id"])
    evs = [ev["data"] for ev in frames]
    check_gapless(evs)
    ts = types(evs)
    assert ts[0] == "run.accepted" and ts[-1] == "run.completed", ts
    assert ts.count("run.completed") == 1 and "run.failed" not in ts, ts
    assert evs[0]["payload"] == {"input": text, "attempt": 1}, evs[0]
    assert ts[-3:] == ["revision.created", "checkpoint.created", "run.completed"], ts
    assert ts[1] == "assistant.delta", ts
    # Tool events come in started/completed pairs with the same call id.
    tool_evs = [e for e in evs if e["type"].startswith("tool.")]
    assert len(tool_evs) == 8, types(tool_evs)  # three write_file + list_files
    for a, b in zip(tool_evs[::2], tool_evs[1::2]):
        assert a["type"] == "tool.started" and b["type"] == "tool.completed", (a, b)
        assert a["payload"]["call_id"] == b["payload"]["call_id"] and a["payload"]["tool"] == b["payload"]["tool"]
        assert b["seq"] == a["seq"] + 1 and isinstance(b["payload"]["duration_ms"], int)
    written = [e["payload"]["arguments"]["path"] for e in tool_evs
               if e["type"] == "tool.started" and e["payload"]["tool"] == "write_file"]
    assert written == ["index.html", "style.css", "app.js"], written
    # The text of each response streams in pieces before its tools.
    deltas = [e for e in evs if e["type"] == "assistant.delta"]
    assert len(deltas) >= 3 and {d["payload"]["message_index"] for d in deltas} == {0, 1, 2}, deltas[:3]
    assert "".join(d["payload"]["text"] for d in deltas if d["payload"]["message_index"] == 0) \
        .startswith("I'll build you a landing page")

    rev_ev, ck_ev, done = evs[-3]["payload"], evs[-2]["payload"], evs[-1]["payload"]
    assert sorted(rev_ev["added"]) == ["app.js", "index.html", "style.css"], rev_ev
    assert rev_ev["changed"] == [] and rev_ev["deleted"] == [], rev_ev
    assert ck_ev["revision_id"] == rev_ev["revision_id"] and ck_ev["label"].startswith("[script:default]"), ck_ev
    assert done["status"] == "completed" and done["changed"] is True and done["steps"] == 3, done
    assert done["revision_id"] == rev_ev["revision_id"] and done["checkpoint_id"] == ck_ev["checkpoint_id"], done
    assert done["usage"]["total_tokens"] == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"] > 0

    final = get_run(token, app["id"], run["id"])
    assert final["status"] == "completed" and final["attempt"] == 1 and final["error"] is None, final
    assert final["revision_id"] == done["revision_id"] and final["checkpoint_id"] == done["checkpoint_id"], final
    assert final["usage"] == done["usage"], (final, done)
    assert final["started_at"] and final["finished_at"] and final["finished_at"] >= final["started_at"], final
    appnow = request("GET", "/admin/apps/%d" % app["id"], token=token).json()
    assert appnow["draft_revision_id"] == final["revision_id"] and appnow["active_run_id"] is None, appnow
    # The files the script wrote are the draft revision's files, byte for byte.
    want = script_step_files("default")
    rev = request("GET", "/admin/apps/%d/revisions/%d" % (app["id"], final["revision_id"]), token=token).json()
    assert rev["origin"] == "run" and rev["run_id"] == run["id"], rev
    assert sorted(f["path"] for f in rev["files"]) == sorted(want), rev
    for path, content in want.items():
        r = request("GET", "/admin/apps/%d/revisions/%d/files/%s" % (app["id"], final["revision_id"], path),
                    token=token)
        assert r.status == 200 and r.body == content.encode(), (path, r)
    # The JSON pages are the stream, event for event, whatever the page size.
    for limit in (1, 7, 100):
        pages, terminal = api_events(token, app["id"], run["id"], limit=limit)
        assert terminal and pages == evs, limit
    tail, terminal = api_events(token, app["id"], run["id"], after=len(evs) - 2, limit=5)
    assert terminal and tail == evs[-2:]
    r = request("GET", runs_path(app["id"], run["id"], "/events?after=%d" % len(evs)), token=token).json()
    assert r == {"items": [], "next_after": len(evs), "terminal": True}, r
    # The run is listed, newest first.
    listed = request("GET", runs_path(app["id"]), token=token).json()
    assert [x["id"] for x in listed["items"]] == [run["id"]] and listed["items"][0]["status"] == "completed"
    secret_free(json.dumps(evs), json.dumps(final))


# ---- resume --------------------------------------------------------------


def test_stream_resume_with_last_event_id_and_after():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:slow] take your time %s" % unique("n"))
    aid, rid = app["id"], run["id"]
    seen = {}

    def take(evs):
        for ev in evs:
            check_frame(ev, rid, aid)
            d = ev["data"]
            if d["seq"] in seen:
                assert seen[d["seq"]] == d, "seq %d differs between connections" % d["seq"]
            seen[d["seq"]] = d
        return [ev["data"]["seq"] for ev in evs]

    s = Stream(token, aid, rid)
    assert take(s.read(5)) == [1, 2, 3, 4, 5]
    s.close()  # drop mid-run
    s = Stream(token, aid, rid, last_event_id=3)
    assert take(s.read(5)) == [4, 5, 6, 7, 8]
    s.close()
    s = Stream(token, aid, rid, last_event_id=0)
    assert take(s.read(2)) == [1, 2]
    s.close()
    s = Stream(token, aid, rid, query="?after=6")
    assert take(s.read(3)) == [7, 8, 9]
    s.close()
    assert get_run(token, aid, rid)["status"] == "running"
    # Resume at the newest event while the run is live: the rest arrives
    # as it happens, exactly once each, until the terminal event.
    newest = max(seen)
    s = Stream(token, aid, rid, last_event_id=newest)
    rest = s.read_to_end()
    s.close()
    seqs = take(rest)
    assert seqs == list(range(newest + 1, newest + 1 + len(seqs))), seqs
    assert rest[-1]["data"]["type"] == "run.completed", rest[-1]
    # Events written after the reconnect arrived live, not in one lump at the end.
    assert rest[-1]["t"] - rest[0]["t"] > 2, (rest[0]["t"], rest[-1]["t"])
    last = seqs[-1]
    everything = [seen[i] for i in range(1, last + 1)]
    pages, terminal = api_events(token, aid, rid, limit=50)
    assert terminal and pages == everything
    # Resuming at or past the end: no events, and the response ends at once.
    for lei in (last, last + 10):
        t0 = time.time()
        s = Stream(token, aid, rid, last_event_id=lei)
        assert s.status == 200 and s.read_to_end() == [], lei
        s.close()
        assert time.time() - t0 < 3
    # A resume point mid-log on a finished run: exactly the tail.
    s = Stream(token, aid, rid, query="?after=%d" % (last - 4))
    assert take(s.read_to_end()) == list(range(last - 3, last + 1))
    s.close()
    # Last-Event-ID wins over ?after (it is what EventSource sends on reconnect).
    s = Stream(token, aid, rid, last_event_id=last - 1, query="?after=1")
    assert take(s.read_to_end()) == [last]
    s.close()


def test_stream_headers_unbuffered_delivery_and_keepalive():
    token = org()
    app = new_app(token)
    t0 = time.time()
    run = start_run(token, app["id"], "[script:slow] stream it %s" % unique("n"))
    s = Stream(token, app["id"], run["id"])
    assert s.status == 200
    assert s.header("Content-Type").startswith("text/event-stream"), s.resp.getheaders()
    assert "no-store" in (s.header("Cache-Control") or "") or "no-cache" in (s.header("Cache-Control") or "")
    first = s.next()
    assert first["data"]["type"] == "run.accepted" and first["t"] - t0 < 2, first["t"] - t0
    deltas = []
    while len(deltas) < 10:
        ev = s.next()
        assert ev["data"]["type"] == "assistant.delta", ev
        deltas.append(ev)
    # Ten deltas are in while the model is still talking: nothing buffers.
    assert get_run(token, app["id"], run["id"])["status"] == "running"
    assert deltas[-1]["t"] - deltas[0]["t"] > 0.5, [d["t"] for d in deltas]
    assert deltas[0]["t"] - t0 < 3, deltas[0]["t"] - t0
    r = cancel(token, app["id"], run["id"])
    assert r.status == 202, r
    rest = s.read_to_end()
    s.close()
    assert rest[-1]["data"]["type"] == "run.failed"


def test_keepalive_comment_on_an_idle_stream_and_cancel_kills_the_command():
    token = org()
    app = new_app(token)
    keepalive = int(os.environ.get("KILN_STREAM_KEEPALIVE_S", "15"))
    run = start_run(token, app["id"], "[script:command-sleep] wait %s" % unique("n"))
    s = Stream(token, app["id"], run["id"], timeout=keepalive + 10)
    while True:
        ev = s.next()
        assert ev is not None and ev["data"]["type"] not in TERMINAL, ev
        if ev["data"]["type"] == "tool.started":
            assert ev["data"]["payload"]["tool"] == "run_command", ev
            break
    procs = eventually(lambda: runner_descendants("/dev/null"), timeout=5, what="the command's process")
    # The command keeps the run silent: only a keep-alive comment comes.
    if keepalive <= 20:
        t_idle = time.time()
        item = s.next(stop_on_comment=True)
        assert item == {"comment": ": keep-alive"}, item
        assert keepalive - 2 <= time.time() - t_idle <= keepalive + 3, time.time() - t_idle
    assert get_run(token, app["id"], run["id"])["status"] == "running"
    t0 = time.time()
    r = cancel(token, app["id"], run["id"])
    assert r.status == 202 and r.json()["cancel_requested"] is True, r
    rest = s.read_to_end()
    s.close()
    elapsed = time.time() - t0
    assert elapsed < 2, elapsed  # the bound: a running command is killed within 2 s
    assert types(e["data"] for e in rest) == ["tool.failed", "run.failed"], types(e["data"] for e in rest)
    assert rest[0]["data"]["payload"]["error"]["code"] == "cancelled", rest[0]
    assert rest[1]["data"]["payload"]["error"]["code"] == "cancelled", rest[1]
    assert rest[1]["data"]["payload"]["status"] == "cancelled"
    eventually(lambda: not any(os.path.exists("/proc/%d" % p) for p in procs), timeout=2,
               what="the command to be killed")
    final = get_run(token, app["id"], run["id"])
    assert final["status"] == "cancelled" and final["error"]["code"] == "cancelled", final


# ---- idempotency and one active run ------------------------------------------


def test_idempotent_post_same_key_same_run_other_input_422():
    token = org()
    app = new_app(token)
    crid = unique("crid")
    text = "hello there %s" % unique("n")
    a = start_run(token, app["id"], text, crid=crid)
    assert a["client_request_id"] == crid, a
    b = start_run(token, app["id"], text, crid=crid, expect=200)
    assert b["id"] == a["id"] and b["client_request_id"] == crid, (a, b)
    err = expect_error(request("POST", runs_path(app["id"]), {"input": text + " (edited)", "client_request_id": crid},
                               token=token), 422, "invalid_field")
    assert err["field"] == "client_request_id", err
    wait_run(token, app["id"], a["id"])
    # Still the same run once it has ended, and only one row holds the key.
    c = start_run(token, app["id"], text, crid=crid, expect=200)
    assert c["id"] == a["id"] and c["status"] == "completed", c
    rows = sql("SELECT COUNT(*) FROM agent_runs WHERE app_id = %d AND client_request_id = '%s'" % (app["id"], crid))
    assert rows == [["1"]], rows
    assert len(request("GET", runs_path(app["id"]), token=token).json()["items"]) == 1
    # Keys are per app: another app may use the same one.
    other = new_app(token)
    d = start_run(token, other["id"], text, crid=crid)
    assert d["id"] != a["id"]
    wait_run(token, other["id"], d["id"])


def test_idempotent_post_concurrent_retries_get_the_one_run():
    token = org()
    for _ in range(3):
        app = new_app(token)
        results = []

        def post():
            r = request("POST", runs_path(app["id"]), {"input": "hello again", "client_request_id": "retry"},
                        token=token)
            results.append((r.status, r.json()))

        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(st for st, _ in results)
        assert statuses == [200] * 5 + [202], results
        assert len({body["id"] for _, body in results}) == 1, results
        wait_run(token, app["id"], results[0][1]["id"])


def test_many_clients_stream_the_same_run_identically():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:default] Build a landing page %s" % unique("n"))
    got = [None] * 12

    def watch(i):
        got[i] = stream_all(token, app["id"], run["id"], last_event_id=(i % 3) * 5 if i % 4 else None)

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(len(got))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    evs, terminal = api_events(token, app["id"], run["id"])
    assert terminal and evs[-1]["type"] == "run.completed"
    for i, g in enumerate(got):
        start = (i % 3) * 5 if i % 4 else 0
        assert g == evs[start:], (i, types(g or [])[:5])


def test_second_active_run_is_409_naming_the_active_one():
    token = org()
    app = new_app(token)
    a = start_run(token, app["id"], "[script:slow] first %s" % unique("n"))
    for body in ({"input": "second"}, {"input": "second", "client_request_id": unique("crid")}):
        err = expect_error(request("POST", runs_path(app["id"]), body, token=token), 409, "run_active")
        assert err["run_id"] == a["id"], err
    assert request("GET", "/admin/apps/%d" % app["id"], token=token).json()["active_run_id"] == a["id"]
    assert cancel(token, app["id"], a["id"]).status == 202
    assert wait_run(token, app["id"], a["id"], timeout=5)["status"] == "cancelled"
    # Once it ended, the app takes a new run.
    b = start_run(token, app["id"], "second")
    wait_run(token, app["id"], b["id"])


# ---- cancel ---------------------------------------------------------------


def test_cancel_while_the_model_streams():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:slow] cancel me %s" % unique("n"))
    s = Stream(token, app["id"], run["id"])
    got = s.read(4)
    assert types(e["data"] for e in got) == ["run.accepted"] + ["assistant.delta"] * 3
    t0 = time.time()
    r = cancel(token, app["id"], run["id"])
    assert r.status == 202 and r.json()["id"] == run["id"], r
    rest = s.read_to_end()
    s.close()
    assert time.time() - t0 < 2, time.time() - t0  # the model request is aborted within 2 s
    evs = [e["data"] for e in got + rest]
    check_gapless(evs)
    assert types(evs)[-1] == "run.failed" and types(evs).count("run.failed") == 1, types(evs)
    p = evs[-1]["payload"]
    assert p["status"] == "cancelled" and p["error"]["code"] == "cancelled" and p["changed_files"] == [], p
    final = get_run(token, app["id"], run["id"])
    assert final["status"] == "cancelled" and final["error"]["code"] == "cancelled" and final["finished_at"], final
    expect_error(cancel(token, app["id"], run["id"]), 409, "conflict")


def test_cancel_queued_run_and_finished_run():
    token = org()
    app = new_app(token)
    stack("kill-runner")  # nothing claims: the run stays queued
    try:
        run = start_run(token, app["id"], "[script:default] never runs %s" % unique("n"))
        time.sleep(0.3)
        assert get_run(token, app["id"], run["id"])["status"] == "queued"
        r = cancel(token, app["id"], run["id"], "rollback")
        assert r.status == 202, r
        body = r.json()
        assert body["status"] == "cancelled" and body["error"]["code"] == "cancelled", body
        assert body["started_at"] is None and body["finished_at"], body
    finally:
        stack("start-runner")
    evs = stream_all(token, app["id"], run["id"])
    assert types(evs) == ["run.accepted", "run.failed"], types(evs)
    assert evs[1]["payload"]["status"] == "cancelled" and evs[1]["payload"]["error"]["code"] == "cancelled"
    expect_error(cancel(token, app["id"], run["id"]), 409, "conflict")
    # No runner picks it up later.
    time.sleep(0.8)
    assert get_run(token, app["id"], run["id"])["attempt"] == 0
    # A finished run cannot be cancelled either.
    done = start_run(token, app["id"], "hi %s" % unique("n"))
    assert wait_run(token, app["id"], done["id"])["status"] == "completed"
    err = expect_error(cancel(token, app["id"], done["id"]), 409, "conflict")
    assert "completed" in err["message"], err
    expect_error(request("POST", runs_path(app["id"], done["id"], "/cancel"), {"mode": "undo"}, token=token),
                 422, "invalid_field")


def _cancel_after_writes(token, mode):
    app = new_app(token, {"index.html": "<h1>before the run</h1>\n", "keep.txt": "kept\n"})
    base_rev = app["draft_revision_id"]
    run = start_run(token, app["id"], "[script:write-then-wait] write then wait %s" % unique("n"))
    s = Stream(token, app["id"], run["id"])
    while True:
        ev = s.next()
        assert ev is not None and ev["data"]["type"] not in TERMINAL, ev
        if ev["data"]["type"] == "tool.started" and ev["data"]["payload"]["tool"] == "run_command":
            break
    t0 = time.time()
    assert cancel(token, app["id"], run["id"], mode).status == 202
    rest = s.read_to_end()
    s.close()
    assert time.time() - t0 < 2, time.time() - t0  # the command killed (and a rollback done) within 2 s
    failed = rest[-1]["data"]
    assert failed["type"] == "run.failed" and failed["payload"]["status"] == "cancelled", failed
    run = get_run(token, app["id"], run["id"])
    assert run["status"] == "cancelled" and run["revision_id"] is None, run
    appnow = request("GET", "/admin/apps/%d" % app["id"], token=token).json()
    assert appnow["draft_revision_id"] == base_rev and appnow["active_run_id"] is None, appnow
    return app, failed["payload"]


def _workspace_diff(token, app_id, ckpt_id):
    r = request("GET", "/admin/apps/%d/coding-agent/checkpoints/%d/diff/draft" % (app_id, ckpt_id), token=token)
    assert r.status == 200, r
    return r.json()


def test_cancel_rollback_restores_the_pre_run_workspace():
    token = org()
    app, p = _cancel_after_writes(token, "rollback")
    assert p["rolled_back"] is True and p["base_checkpoint_id"], p
    # The workspace is the pre-run checkpoint again, file for file.
    d = _workspace_diff(token, app["id"], p["base_checkpoint_id"])
    assert d["added"] == [] and d["removed"] == [] and d["changed"] == [], d
    ck = request("GET", "/admin/apps/%d/coding-agent/checkpoints/%d" % (app["id"], p["base_checkpoint_id"]),
                 token=token).json()
    assert sorted(f["path"] for f in ck["files"]) == ["index.html", "keep.txt"], ck
    preview = request("GET", "/admin/apps/%d/preview" % app["id"], token=token).json()["url"]
    assert request("GET", preview + "notes.txt").status == 404
    r = request("GET", preview + "index.html")
    assert r.status == 200 and r.body == b"<h1>before the run</h1>\n", r
    # The next run starts from the restored files: no "outside a run" checkpoint.
    nxt = start_run(token, app["id"], "and now?")
    done = wait_run(token, app["id"], nxt["id"])
    assert done["status"] == "completed", done
    cks = request("GET", "/admin/apps/%d/coding-agent/checkpoints" % app["id"], token=token).json()["items"]
    assert [c for c in cks if c["label"] == "Changes made outside a run"] == [], cks


def test_cancel_keep_lists_changed_files_and_keeps_them():
    token = org()
    app, p = _cancel_after_writes(token, "keep")
    assert p["rolled_back"] is False, p
    assert sorted(p["changed_files"]) == ["index.html", "notes.txt"], p
    # The workspace still holds what the run wrote.
    d = _workspace_diff(token, app["id"], p["base_checkpoint_id"])
    assert d["added"] == ["notes.txt"] and d["removed"] == [], d
    assert [c["path"] for c in d["changed"]] == ["index.html"], d
    assert "+<h1>changed by the run</h1>" in d["changed"][0]["diff"], d
    preview = request("GET", "/admin/apps/%d/preview" % app["id"], token=token).json()["url"]
    r = request("GET", preview + "notes.txt")
    assert r.status == 200 and r.body == b"written by the run\n", r
    assert request("GET", preview + "after.txt").status == 404  # the call after the command never ran
    # The call after the cancelled command never ran, yet the thread stays
    # one a provider accepts: the next run on the app goes through.
    nxt = start_run(token, app["id"], "carry on")
    done = wait_run(token, app["id"], nxt["id"])
    assert done["status"] == "completed", done


# ---- provider faults -------------------------------------------------------


def _fault_run(script, timeout=25):
    token = org()
    app = new_app(token)
    t0 = time.time()
    run = start_run(token, app["id"], "[script:%s] fault %s" % (script, unique("n")))
    evs = stream_all(token, app["id"], run["id"])
    elapsed = time.time() - t0
    assert elapsed < timeout, elapsed
    check_gapless(evs)
    assert types(evs)[0] == "run.accepted" and types(evs)[-1] in TERMINAL, types(evs)
    assert sum(1 for t in types(evs) if t in TERMINAL) == 1
    final = get_run(token, app["id"], run["id"])
    secret_free(json.dumps(evs), json.dumps(final))
    return evs, final, elapsed


def _model_retries(run_id):
    with open(os.path.join(ENV["KILN_STATE"], "log", "kiln-runner.log"), errors="replace") as f:
        return sum(1 for line in f if "run %d: model attempt" % run_id in line)


RECOVERED = "All good now: this answer arrived after the provider recovered."


def test_fault_429_is_retried_and_the_run_completes():
    evs, final, elapsed = _fault_run("fault-429")
    assert final["status"] == "completed", final
    assert elapsed >= 0.9, elapsed  # Retry-After: 1 was honoured
    assert _model_retries(final["id"]) == 1
    assert visible_text(evs) == {0: RECOVERED}, evs


def test_fault_500_twice_is_retried_and_the_run_completes():
    evs, final, _ = _fault_run("fault-500")
    assert final["status"] == "completed", final
    assert _model_retries(final["id"]) == 2
    assert visible_text(evs) == {0: RECOVERED}, evs


def test_fault_500_always_fails_the_run_with_a_model_error():
    evs, final, _ = _fault_run("fault-500-always")
    p = evs[-1]["payload"]
    assert evs[-1]["type"] == "run.failed" and p["status"] == "failed", evs[-1]
    assert p["error"]["code"] == "model_unavailable", p
    assert final["status"] == "failed" and final["error"]["code"] == "model_unavailable", final
    assert _model_retries(final["id"]) == int(os.environ.get("KILN_MODEL_MAX_RETRIES", "3"))


def test_fault_stall_times_out_then_the_retry_completes():
    idle = int(os.environ.get("KILN_MODEL_IDLE_TIMEOUT_MS", "3000")) / 1000.0
    evs, final, elapsed = _fault_run("fault-stall", timeout=idle + 10)
    # The stall is noticed within the idle timeout, not after the 30 s silence.
    assert idle <= elapsed < idle + 5, elapsed
    assert final["status"] == "completed", final
    assert _model_retries(final["id"]) == 1
    # The text shown before the stall is replaced by the retried answer,
    # which says so on its first delta.
    deltas = [e["payload"] for e in evs if e["type"] == "assistant.delta"]
    restarts = [i for i, d in enumerate(deltas) if d.get("restart")]
    assert len(restarts) == 1 and restarts[0] > 0, deltas
    assert RECOVERED.startswith("".join(d["text"] for d in deltas[:restarts[0]])), deltas
    assert visible_text(evs) == {0: RECOVERED}, deltas


def test_fault_cutoff_is_retried_and_the_run_completes():
    evs, final, _ = _fault_run("fault-cutoff")
    assert final["status"] == "completed", final
    assert _model_retries(final["id"]) == 1
    assert visible_text(evs) == {0: RECOVERED}, evs


def test_fault_malformed_fails_the_run():
    evs, final, _ = _fault_run("fault-malformed")
    p = evs[-1]["payload"]
    assert evs[-1]["type"] == "run.failed" and p["error"]["code"] == "model_stream_malformed", p
    assert final["status"] == "failed" and final["error"]["code"] == "model_stream_malformed", final


def test_fault_400_fails_without_retry():
    evs, final, _ = _fault_run("fault-400")
    p = evs[-1]["payload"]
    assert evs[-1]["type"] == "run.failed" and p["error"]["code"] == "model_bad_request", p
    assert final["status"] == "failed" and final["error"]["code"] == "model_bad_request", final
    assert _model_retries(final["id"]) == 0


# ---- runner death and competition --------------------------------------------------


def test_runner_kill_9_mid_run_resumes_on_attempt_2():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:slow] survive %s" % unique("n"))
    s = Stream(token, app["id"], run["id"], timeout=40)
    first = s.read(6)
    assert get_run(token, app["id"], run["id"])["attempt"] == 1
    try:
        stack("kill-runner")
    finally:
        stack("start-runner")
    rest = s.read_to_end()
    s.close()
    evs = [e["data"] for e in first + rest]
    check_gapless(evs)
    ts = types(evs)
    assert ts[-1] == "run.completed" and ts.count("run.completed") == 1 and "run.failed" not in ts, ts
    accepted = [e for e in evs if e["type"] == "run.accepted"]
    assert len(accepted) == 2 and accepted[0]["payload"]["attempt"] == 1, accepted
    assert accepted[1]["payload"]["resumed"] is True and accepted[1]["payload"]["attempt"] == 2, accepted
    # The response cut short restarts: its first delta says so.
    after = evs[evs.index(accepted[1]) + 1:]
    assert after[0]["type"] == "assistant.delta" and after[0]["payload"].get("restart") is True, after[0]
    with open(os.path.join(SCRIPTS, "slow.json")) as f:
        slow_text = json.load(f)["steps"][0]["text"]
    assert visible_text(evs) == {0: slow_text}
    final = get_run(token, app["id"], run["id"])
    assert final["status"] == "completed" and final["attempt"] == 2, final
    pages, _ = api_events(token, app["id"], run["id"])
    assert pages == evs


def _gone(pid):
    # Reaped, not only dead: tools/stack takes a zombie's pid for a live runner.
    return not os.path.exists("/proc/%d" % pid)


def test_runner_sigterm_hands_the_run_back_at_once():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:slow] stop politely %s" % unique("n"))
    s = Stream(token, app["id"], run["id"])
    s.read(4)
    pids = runner_pids()
    try:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        eventually(lambda: all(_gone(p) for p in pids), timeout=10, what="the runners to stop")
        # Handed back as the runner stopped, not left for its lease to run out.
        rows = sql("SELECT status, lease_expires_at < NOW(3) FROM agent_runs WHERE id = %d" % run["id"])
        assert rows == [["running", "1"]], rows
    finally:
        stack("start-runner")
    while True:
        ev = s.next()
        assert ev is not None and ev["data"]["type"] not in TERMINAL, ev
        if ev["data"]["type"] == "run.accepted":
            break
    assert ev["data"]["payload"]["resumed"] is True and ev["data"]["payload"]["attempt"] == 2, ev
    assert cancel(token, app["id"], run["id"]).status == 202
    rest = s.read_to_end()
    s.close()
    assert rest[-1]["data"]["type"] == "run.failed"
    evs, _ = api_events(token, app["id"], run["id"])
    check_gapless(evs)
    assert types(evs).count("run.accepted") == 2


def _stop_every_attempt(token, app_id, run_id, stop):
    """Calls stop() once each of runner_max_attempts attempts is streaming."""
    attempts = int(os.environ.get("KILN_RUNNER_MAX_ATTEMPTS", "3"))
    for attempt in range(1, attempts + 1):
        eventually(lambda: (lambda r: r["attempt"] == attempt and r["status"] == "running")(
            get_run(token, app_id, run_id)), timeout=15, what="attempt %d" % attempt)
        # The attempt is under way: its run.accepted (resumed ones) or a delta is in.
        eventually(lambda: types(api_events(token, app_id, run_id)[0])[-1] == "assistant.delta",
                   timeout=10, what="attempt %d streaming" % attempt)
        stop()
    return attempts


def _restart_runners(orderly=False):
    """kill -9 of the runners (a crash) or SIGTERM (a deploy), then new ones."""
    pids = runner_pids()
    try:
        if orderly:
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            eventually(lambda: all(_gone(p) for p in pids), timeout=10, what="the runners to stop")
        else:
            stack("kill-runner")
    finally:
        stack("start-runner")


def test_runner_lost_too_many_times_fails_the_run():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:slow] doomed %s" % unique("n"))
    _stop_every_attempt(token, app["id"], run["id"], _restart_runners)
    final = wait_run(token, app["id"], run["id"], timeout=20)
    assert final["status"] == "failed" and final["error"]["code"] == "runner_lost", final
    evs, terminal = api_events(token, app["id"], run["id"])
    assert terminal and types(evs)[-1] == "run.failed" and evs[-1]["payload"]["error"]["code"] == "runner_lost"
    check_gapless(evs)


def test_two_runners_execute_each_run_exactly_once():
    token = org()
    apps = [new_app(token) for _ in range(6)]
    runs = [start_run(token, a["id"], "[script:default] page %s" % unique("n")) for a in apps]
    for a, r in zip(apps, runs):
        final = wait_run(token, a["id"], r["id"], timeout=40)
        assert final["status"] == "completed" and final["attempt"] == 1, final
        evs, terminal = api_events(token, a["id"], r["id"])
        assert terminal
        check_gapless(evs)
        ts = types(evs)
        assert ts.count("run.accepted") == 1 and ts.count("run.completed") == 1 and ts[-1] == "run.completed", ts
        assert ts.count("revision.created") == 1 and ts.count("tool.started") == 4, ts
    with open(os.path.join(ENV["KILN_STATE"], "log", "kiln-runner.log"), errors="replace") as f:
        claims = re.findall(r"run (\d+) claimed by (\S+)", f.read())
    for r in runs:
        owners = [o for rid, o in claims if int(rid) == r["id"]]
        assert len(owners) == 1, (r["id"], owners)
    ids = ",".join(str(r["id"]) for r in runs)
    rows = sql("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM agent_run_events WHERE run_id IN (%s) "
               "AND type = 'run.completed'" % ids)
    assert rows == [["6", "6"]], rows


# ---- the conversation, step cap, hostile tools ---------------------------------


def test_conversation_carries_over_to_the_next_run():
    token = org()
    app = new_app(token)
    first = start_run(token, app["id"], "[script:default] Build a landing page %s" % unique("n"))
    one = wait_run(token, app["id"], first["id"])
    assert one["status"] == "completed", one
    css1 = request("GET", "/admin/apps/%d/revisions/%d/files/style.css" % (app["id"], one["revision_id"]),
                   token=token).body.decode()
    assert "--title: #1f2933;" in css1
    # No script marker: the model only knows it is turn 2 from the history sent.
    second = start_run(token, app["id"], "make the title blue")
    evs = stream_all(token, app["id"], second["id"])
    check_gapless(evs)
    started = [(e["payload"]["tool"], e["payload"]["arguments"].get("path"))
               for e in evs if e["type"] == "tool.started"]
    assert started == [("read_file", "style.css"), ("write_file", "style.css")], started
    two = get_run(token, app["id"], second["id"])
    assert two["status"] == "completed" and two["revision_id"] != one["revision_id"], two
    rev_ev = [e for e in evs if e["type"] == "revision.created"][0]["payload"]
    assert rev_ev["changed"] == ["style.css"] and rev_ev["added"] == [] and rev_ev["parent_id"] == one["revision_id"]
    css2 = request("GET", "/admin/apps/%d/revisions/%d/files/style.css" % (app["id"], two["revision_id"]),
                   token=token).body.decode()
    assert "--title: #1d4ed8;" in css2 and "--title: #1f2933;" not in css2
    assert two["base_revision_id"] == one["revision_id"], two


def test_max_steps_ends_the_run_completed_with_outcome_max_steps():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:many-steps] keep going %s" % unique("n"))
    evs = stream_all(token, app["id"], run["id"])
    check_gapless(evs)
    done = evs[-1]
    assert done["type"] == "run.completed" and done["payload"]["outcome"] == "max_steps", done
    assert done["payload"]["steps"] == 12 and done["payload"]["changed"] is False, done
    assert types(evs).count("tool.completed") == 12
    assert get_run(token, app["id"], run["id"])["status"] == "completed"


def test_a_long_run_streams_past_one_fetch_batch():
    token = org()
    app = new_app(token)
    # A per-app profile lifts the step cap so the run logs over 500 events.
    set_app_profile(app["id"], {"max_steps": 200})
    run = start_run(token, app["id"], "[script:many-steps] all of them %s" % unique("n"))
    s = Stream(token, app["id"], run["id"])
    head = s.read(3)
    s.close()
    evs = stream_all(token, app["id"], run["id"], last_event_id=2)
    assert [e["data"] for e in head[2:]] == evs[:1]
    evs = [e["data"] for e in head[:2]] + evs
    check_gapless(evs)
    # 200 steps of text, tool.started and tool.completed (a text may come in more than one delta)
    assert len(evs) >= 602 and types(evs).count("tool.completed") == 200, len(evs)
    assert evs[-1]["type"] == "run.completed", evs[-1]
    assert evs[-1]["payload"]["steps"] == 200 and evs[-1]["payload"]["outcome"] == "max_steps", evs[-1]
    pages, terminal = api_events(token, app["id"], run["id"], limit=1000)
    assert terminal and pages == evs
    assert stream_all(token, app["id"], run["id"], query="?after=450") == evs[450:]


def _stat(path):
    try:
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        return None


def test_escape_attempts_fail_as_tools_and_touch_nothing_outside():
    token = org()
    app = new_app(token, {"index.html": "<h1>mine</h1>\n"})
    canary = os.path.join(ENV["KILN_STATE"], "workspaces", "outside.txt")
    with open(canary, "w") as f:
        f.write("canary\n")
    with open("/etc/passwd", "rb") as f:
        passwd = hashlib.sha256(f.read()).hexdigest()
    watched = ["/tmp/stolen.html", os.path.join(ENV["KILN_STATE"], "tmp", "stolen.html"),
               os.path.join(ENV["KILN_STATE"], "stolen.html")]
    before = [_stat(p) for p in watched]
    run = start_run(token, app["id"], "[script:escape] try to escape %s" % unique("n"))
    evs = stream_all(token, app["id"], run["id"])
    check_gapless(evs)
    assert evs[-1]["type"] == "run.completed", evs[-1]
    failed = {e["payload"]["tool"]: e["payload"]["error"] for e in evs if e["type"] == "tool.failed"}
    assert sorted(failed) == ["delete_file", "read_file", "rename_file", "run_command", "write_file"], failed
    assert not [e for e in evs if e["type"] == "tool.completed"], evs
    for tool in ("read_file", "write_file", "delete_file", "rename_file"):
        assert "path" in failed[tool]["code"] or "path" in failed[tool]["message"], (tool, failed[tool])
    assert "curl" in failed["run_command"]["message"], failed["run_command"]
    with open("/etc/passwd", "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == passwd
    with open(canary) as f:
        assert f.read() == "canary\n"
    os.unlink(canary)
    assert [_stat(p) for p in watched] == before
    final = get_run(token, app["id"], run["id"])
    assert final["status"] == "completed" and final["revision_id"] is None, final
    r = request("GET", "/admin/apps/%d/revisions/%d/files/index.html" % (app["id"], app["draft_revision_id"]),
                token=token)
    assert r.body == b"<h1>mine</h1>\n"
    d = request("GET", "/admin/apps/%d/coding-agent/checkpoints" % app["id"], token=token).json()["items"][0]
    diff = _workspace_diff(token, app["id"], d["id"])
    assert diff["added"] == [] and diff["removed"] == [] and diff["changed"] == [], diff


def test_cuts_inside_multibyte_characters_keep_events_valid():
    token = org()
    app = new_app(token)
    # The checkpoint label is the input's first 80 bytes: byte 80 falls inside "é".
    text = "[script:unicode] " + "x" * (79 - len("[script:unicode] ")) + "\u00e9t\u00e9 \u2713 %s" % unique("n")
    run = start_run(token, app["id"], text)
    evs = stream_all(token, app["id"], run["id"])
    check_gapless(evs)
    assert evs[-1]["type"] == "run.completed", evs[-1]
    tool_evs = [e for e in evs if e["type"].startswith("tool.")]
    assert types(tool_evs) == ["tool.started", "tool.completed"] + ["tool.started", "tool.failed"] * 3, types(tool_evs)
    big = tool_evs[0]["payload"]["arguments"]["content"]
    assert big.startswith("x" + "\u00e9" * 999) and big.endswith("\u2026 (3001 bytes)"), big[-40:]
    assert tool_evs[3]["payload"]["error"]["code"] == "unknown_tool", tool_evs[3]
    assert tool_evs[5]["payload"]["error"]["code"] == "invalid_arguments", tool_evs[5]
    raw = tool_evs[6]["payload"]["arguments"]
    assert isinstance(raw, str) and len(raw.encode()) < 2100 and raw.endswith("bytes)"), raw[-40:]
    label = [e for e in evs if e["type"] == "checkpoint.created"][0]["payload"]["label"]
    assert label == text[:79] + "\u2026", label  # "é" would end past byte 80
    final = get_run(token, app["id"], run["id"])
    assert final["status"] == "completed", final
    r = request("GET", "/admin/apps/%d/revisions/%d/files/accents.txt" % (app["id"], final["revision_id"]),
                token=token)
    assert r.body.decode() == "x" + "\u00e9" * 1500


# ---- durable state: resumes, endings, locks -------------------------------------


def _wait_for_tool(s, tool):
    while True:
        ev = s.next()
        assert ev is not None and ev["data"]["type"] not in TERMINAL, ev
        if ev["data"]["type"] == "tool.started" and ev["data"]["payload"]["tool"] == tool:
            return ev["data"]


def test_resumed_run_never_runs_a_started_call_twice():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:command-sleep] wait %s" % unique("n"))
    s = Stream(token, app["id"], run["id"], timeout=40)
    started = _wait_for_tool(s, "run_command")
    s.close()
    call_id = started["payload"]["call_id"]
    try:
        stack("kill-runner")  # dies between tool.started and its outcome
    finally:
        stack("start-runner")
    final = wait_run(token, app["id"], run["id"], timeout=40)
    assert final["status"] == "completed" and final["attempt"] == 2, final
    evs, _ = api_events(token, app["id"], run["id"])
    check_gapless(evs)
    mine = [e for e in evs if e["type"].startswith("tool.") and e["payload"]["call_id"] == call_id]
    # announced once, never run again: the resumed attempt records it interrupted
    assert types(mine) == ["tool.started", "tool.failed"], types(mine)
    assert mine[1]["payload"]["error"]["code"] == "interrupted", mine[1]
    resumed = [e for e in evs if e["type"] == "run.accepted"][1]
    assert resumed["seq"] < mine[1]["seq"], (resumed, mine[1])
    # the model got that as the call's result, and went on
    rows = sql("SELECT content FROM agent_messages WHERE run_id = %d AND role = 'tool'" % run["id"])
    assert len(rows) == 1 and json.loads(rows[0][0])["error"]["code"] == "interrupted", rows


def test_finish_reason_length_and_content_filter_end_the_run():
    token = org()
    for script, code, wrote in (("truncated-answer", "model_output_truncated", ["index.html"]),
                                ("truncated-tool-call", "model_output_truncated", []),
                                ("content-filter", "content_filtered", [])):
        app = new_app(token)
        run = start_run(token, app["id"], "[script:%s] go %s" % (script, unique("n")))
        evs = stream_all(token, app["id"], run["id"])
        check_gapless(evs)
        last = evs[-1]
        assert last["type"] == "run.failed" and last["payload"]["error"]["code"] == code, (script, last)
        assert sorted(last["payload"]["changed_files"]) == wrote, (script, last)
        # a cut response's calls never run
        started = [e["payload"]["arguments"].get("path") for e in evs if e["type"] == "tool.started"]
        assert started == wrote, (script, started)
        final = get_run(token, app["id"], run["id"])
        assert final["status"] == "failed" and final["error"]["code"] == code, final
        # the thread stays one a provider takes: the next run goes through
        nxt = start_run(token, app["id"], "hi %s" % unique("n"))
        assert wait_run(token, app["id"], nxt["id"])["status"] == "completed", script


def test_a_run_held_by_a_live_runner_without_a_child_is_resumed():
    token = org()
    busy = new_app(token)
    # a runner with a child: it renews leases for as long as the command runs
    other = start_run(token, busy["id"], "[script:command-sleep] wait %s" % unique("n"))
    s = Stream(token, busy["id"], other["id"])
    _wait_for_tool(s, "run_command")
    s.close()
    owner = sql("SELECT lease_owner FROM agent_runs WHERE id = %d" % other["id"])[0][0]
    app = new_app(token)
    text = "[script:no-change] hi %s" % unique("n")
    # A run under that runner's name that no child of it drives (a fork
    # that failed, a child lost track of): its lease must lapse.
    sql("INSERT INTO agent_runs (app_id, org_id, input, request_sha256, status, attempt, lease_owner, "
        "lease_expires_at, started_at) SELECT id, org_id, '%s', REPEAT('0', 64), 'running', 1, '%s', "
        "NOW(3) + INTERVAL 3 SECOND, NOW(3) FROM apps WHERE id = %d" % (text, owner, app["id"]))
    run_id = int(sql("SELECT id FROM agent_runs WHERE app_id = %d" % app["id"])[0][0])
    sql("INSERT INTO agent_run_events (run_id, seq, type, payload) VALUES (%d, 1, 'run.accepted', "
        "'{\"attempt\":1}')" % run_id)
    lease = float(os.environ.get("KILN_RUNNER_LEASE_S", "4"))
    try:
        final = wait_run(token, app["id"], run_id, timeout=lease + 8)
        assert final["status"] == "completed" and final["attempt"] == 2, final
        assert get_run(token, busy["id"], other["id"])["status"] == "running"
    finally:
        cancel(token, busy["id"], other["id"])
    wait_run(token, busy["id"], other["id"])


class _AppLock:
    """Holds an app's workspace lock the way a restore does."""

    def __init__(self, app_id):
        d = os.path.join(ENV["KILN_STATE"], "locks")
        os.makedirs(d, exist_ok=True)
        self.fd = os.open(os.path.join(d, "app-%d.lock" % app_id), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def test_cancel_while_waiting_for_the_workspace_lock():
    token = org()
    app = new_app(token)
    lock = _AppLock(app["id"])
    try:
        run = start_run(token, app["id"], "[script:default] blocked %s" % unique("n"))
        eventually(lambda: get_run(token, app["id"], run["id"])["status"] == "running", what="the claim")
        time.sleep(1.0)
        evs, _ = api_events(token, app["id"], run["id"])
        assert types(evs) == ["run.accepted"], types(evs)  # waiting, nothing done
        t0 = time.time()
        assert cancel(token, app["id"], run["id"]).status == 202
        final = wait_run(token, app["id"], run["id"], timeout=5)
        assert time.time() - t0 < 2, time.time() - t0
        assert final["status"] == "cancelled", final
    finally:
        lock.release()
    evs, _ = api_events(token, app["id"], run["id"])
    assert types(evs) == ["run.accepted", "run.failed"], types(evs)
    assert evs[1]["payload"]["error"]["code"] == "cancelled" and evs[1]["payload"]["changed_files"] == []


def test_the_workspace_is_opened_under_the_lock():
    token = org()
    app = new_app(token, {"index.html": "<h1>old</h1>\n"})
    ws = os.path.join(ENV["KILN_STATE"], "workspaces", str(app["id"]))
    lock = _AppLock(app["id"])
    try:
        run = start_run(token, app["id"], "[script:default] Build a landing page %s" % unique("n"))
        eventually(lambda: get_run(token, app["id"], run["id"])["status"] == "running", what="the claim")
        time.sleep(0.5)
        # what a restore does under the lock: a new tree swapped in
        os.rename(ws, ws + ".old")
        os.mkdir(ws)
        with open(os.path.join(ws, "fresh.txt"), "w") as f:
            f.write("the restored tree\n")
    finally:
        lock.release()
    final = wait_run(token, app["id"], run["id"])
    try:
        assert final["status"] == "completed" and final["revision_id"], final
        assert os.path.exists(os.path.join(ws, "app.js")) and os.path.exists(os.path.join(ws, "fresh.txt"))
        assert not os.path.exists(os.path.join(ws + ".old", "app.js")), "the run wrote into the old tree"
        rev = request("GET", "/admin/apps/%d/revisions/%d" % (app["id"], final["revision_id"]), token=token).json()
        assert "fresh.txt" in [f["path"] for f in rev["files"]], rev
    finally:
        subprocess.run(["rm", "-rf", ws + ".old"], check=True)


def _start_writes_then_stop_runners(token, app):
    """A run that wrote notes.txt and index.html, its runners gone mid-command."""
    run = start_run(token, app["id"], "[script:write-then-wait] write then wait %s" % unique("n"))
    s = Stream(token, app["id"], run["id"])
    _wait_for_tool(s, "run_command")
    s.close()
    stack("kill-runner")
    return run


def test_cancel_of_an_orphaned_run_lists_its_changed_files():
    token = org()
    app = new_app(token, {"index.html": "<h1>before</h1>\n"})
    try:
        run = _start_writes_then_stop_runners(token, app)
        time.sleep(float(os.environ.get("KILN_RUNNER_LEASE_S", "4")) + 0.5)
        r = cancel(token, app["id"], run["id"], "keep")
        assert r.status == 202 and r.json()["status"] == "cancelled", r
    finally:
        stack("start-runner")
    evs, _ = api_events(token, app["id"], run["id"])
    p = evs[-1]["payload"]
    assert evs[-1]["type"] == "run.failed" and p["error"]["code"] == "cancelled", evs[-1]
    assert sorted(p["changed_files"]) == ["index.html", "notes.txt"], p


def test_runner_lost_lists_changed_files_and_carries_out_a_pending_rollback():
    token = org()
    attempts = int(os.environ.get("KILN_RUNNER_MAX_ATTEMPTS", "3"))
    for mode in (None, "rollback"):
        app = new_app(token, {"index.html": "<h1>before</h1>\n"})
        try:
            run = _start_writes_then_stop_runners(token, app)
            # as if every attempt had been lost
            sql("UPDATE agent_runs SET attempt = %d WHERE id = %d" % (attempts, run["id"]))
            if mode:
                assert cancel(token, app["id"], run["id"], mode).status == 202
                assert get_run(token, app["id"], run["id"])["status"] == "running"  # left to a runner
        finally:
            stack("start-runner")
        final = wait_run(token, app["id"], run["id"], timeout=30)
        evs, _ = api_events(token, app["id"], run["id"])
        check_gapless(evs)
        p = evs[-1]["payload"]
        preview = request("GET", "/admin/apps/%d/preview" % app["id"], token=token).json()["url"]
        if not mode:
            assert final["status"] == "failed" and final["error"]["code"] == "runner_lost", final
            assert sorted(p["changed_files"]) == ["index.html", "notes.txt"], p
            assert request("GET", preview + "notes.txt").status == 200
        else:
            assert final["status"] == "cancelled" and p["rolled_back"] is True, (final, p)
            assert request("GET", preview + "notes.txt").status == 404
            assert request("GET", preview + "index.html").body == b"<h1>before</h1>\n"


def _completed_run(script):
    """A run of script on a new app, streamed to its end, which is run.completed."""
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:%s] go %s" % (script, unique("n")))
    evs = stream_all(token, app["id"], run["id"])
    assert evs[-1]["type"] == "run.completed", evs[-1]
    check_gapless(evs)
    return evs


def test_tool_started_arguments_cut_at_any_depth():
    evs = _completed_run("big-arguments")
    started = {e["payload"]["tool"]: e["payload"]["arguments"] for e in evs if e["type"] == "tool.started"}
    assert len(started) == 4, started.keys()
    for tool, args in started.items():
        size = len(json.dumps(args, separators=(",", ":"), ensure_ascii=False).encode())
        assert size <= 16384, (tool, size)
    argv = started["run_command"]["argv"]
    assert argv[:2] == ["node", "-e"] and argv[2].startswith("x" * 2000) and argv[2].endswith("… (5000 bytes)")
    deep = started["write_file"]["meta"]["level1"]["level2"][0]
    assert deep.startswith("z" * 2000) and deep.endswith("… (3000 bytes)"), deep[-30:]
    paths = started["list_files"]["paths"]
    assert paths[:64] == ["p%d" % i for i in range(64)] and paths[64] == "… (936 more items)", paths[60:]
    wide = started["search_files"]
    assert len(wide) <= 17 and all(len(v.encode()) < 300 for v in wide.values()), list(wide)[:5]


def test_orderly_stops_cost_no_attempt():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:slow] deploy through me %s" % unique("n"))
    attempts = _stop_every_attempt(token, app["id"], run["id"], lambda: _restart_runners(orderly=True))
    final = wait_run(token, app["id"], run["id"], timeout=40)
    assert final["status"] == "completed" and final["attempt"] == attempts + 1, final
    assert sql("SELECT handbacks FROM agent_runs WHERE id = %d" % run["id"]) == [[str(attempts)]]


def test_first_run_on_a_fresh_app_checkpoints_nothing_and_rolls_back_to_empty():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "hi %s" % unique("n"))
    final = wait_run(token, app["id"], run["id"])
    assert final["status"] == "completed" and final["revision_id"] is None, final
    cks = request("GET", "/admin/apps/%d/coding-agent/checkpoints" % app["id"], token=token).json()["items"]
    assert cks == [], cks  # nothing changed, so no "Changes made outside a run"
    # A rollback of a run on an app that had no files leaves it with none.
    run = start_run(token, app["id"], "[script:write-then-wait] write then wait %s" % unique("n"))
    s = Stream(token, app["id"], run["id"])
    _wait_for_tool(s, "run_command")
    assert cancel(token, app["id"], run["id"], "rollback").status == 202
    p = s.read_to_end()[-1]["data"]["payload"]
    s.close()
    assert p["status"] == "cancelled" and p["rolled_back"] is True and p["changed_files"] == [], p
    assert os.listdir(os.path.join(ENV["KILN_STATE"], "workspaces", str(app["id"]))) == []


def test_a_resumed_ending_announces_the_revision_with_its_paths():
    token = org()
    app = new_app(token)
    run = start_run(token, app["id"], "[script:default] Build a landing page %s" % unique("n"))
    before = stream_all(token, app["id"], run["id"])
    assert types(before)[-3:] == ["revision.created", "checkpoint.created", "run.completed"]
    # As if the runner died right after recording the revision: the run's
    # last three events never written, its lease lapsed.
    n = len(before)
    sql("DELETE FROM agent_run_events WHERE run_id = %d AND seq > %d" % (run["id"], n - 3))
    sql("UPDATE agent_runs SET status = 'running', finished_at = NULL, revision_id = NULL, checkpoint_id = NULL, "
        "lease_owner = 'gone', lease_expires_at = NOW(3) - INTERVAL 1 SECOND WHERE id = %d" % run["id"])
    final = wait_run(token, app["id"], run["id"], timeout=20)
    assert final["status"] == "completed" and final["revision_id"] == before[-1]["payload"]["revision_id"], final
    after, _ = api_events(token, app["id"], run["id"])
    check_gapless(after)
    assert types(after)[n - 3:] == ["run.accepted", "revision.created", "checkpoint.created", "run.completed"]
    assert after[n - 2]["payload"] == before[-3]["payload"], (after[n - 2], before[-3])
    assert sorted(after[n - 2]["payload"]["added"]) == ["app.js", "index.html", "style.css"]


# ---- streams: the buffer cap, a run that is gone, logs ------------------------------


def _stream_log_lines(run_id):
    with open(os.path.join(ENV["KILN_STATE"], "log", "kiln-api.log"), errors="replace") as f:
        return [line for line in f if "/runs/%d/stream " % run_id in line]


def test_stream_buffer_cap_ends_the_stream_and_the_client_resumes():
    token = org()
    app = new_app(token)
    set_app_profile(app["id"], {"max_steps": 30})
    os.environ["KILN_STREAM_CHANNEL_MAX_EVENTS"] = "40"
    try:
        stack("api-restart")
        run = start_run(token, app["id"], "[script:many-steps] thirty %s" % unique("n"))
        got, connections, last = [], 0, None
        while not got or got[-1]["type"] not in TERMINAL:
            connections += 1
            assert connections < 10, len(got)
            part = stream_all(token, app["id"], run["id"], last_event_id=last)
            assert 0 < len(part) <= 40, len(part)  # a channel holds at most the cap
            got += part
            last = got[-1]["seq"]
    finally:
        del os.environ["KILN_STREAM_CHANNEL_MAX_EVENTS"]
        stack("api-restart")
    check_gapless(got)
    assert connections >= 3 and got[-1]["type"] == "run.completed", (connections, types(got)[-3:])
    pages, _ = api_events(token, app["id"], run["id"])
    assert pages == got
    # one line per stream request: method, path, status, duration and how it ended
    lines = _stream_log_lines(run["id"])
    assert len(lines) == connections, lines
    assert all(re.search(r"kiln-stream\[\d+\] info: GET /admin/apps/%d/coding-agent/runs/%d/stream 200 \d+ms "
                         % (app["id"], run["id"]), line) for line in lines), lines
    assert sum("channel failed" in line for line in lines) == connections - 1, lines
    assert "terminal event" in lines[-1], lines[-1]


def test_stream_of_a_run_that_is_gone_ends():
    token = org()
    app = new_app(token)
    stack("kill-runner")  # it stays queued: nothing else ends the stream
    try:
        run = start_run(token, app["id"], "[script:slow] never runs %s" % unique("n"))
        s = Stream(token, app["id"], run["id"])
        assert s.next()["data"]["type"] == "run.accepted"
        t0 = time.time()
        sql("DELETE FROM agent_runs WHERE id = %d" % run["id"])
        assert s.read_to_end() == []
        s.close()
        assert time.time() - t0 < 3, time.time() - t0
    finally:
        stack("start-runner")
    s = Stream(token, app["id"], run["id"], last_event_id=1)
    assert s.status == 404
    s.close()
    lines = _stream_log_lines(run["id"])
    assert len(lines) == 2 and "channel failed" in lines[0] and " 404 " in lines[1], lines


# ---- listing, coalescing, secrets --------------------------------------------------


def test_list_runs_newest_first_with_a_cursor():
    token = org()
    app = new_app(token)
    ids = []
    for i in range(5):
        run = start_run(token, app["id"], "hi number %d %s" % (i, unique("n")))
        wait_run(token, app["id"], run["id"])
        ids.append(run["id"])
    seen, cursor, pages = [], None, 0
    while True:
        q = "?limit=2" + ("&cursor=" + cursor if cursor else "")
        r = request("GET", runs_path(app["id"]) + q, token=token)
        assert r.status == 200, r
        page = r.json()
        pages += 1
        assert len(page["items"]) <= 2
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(ids, reverse=True) and pages == 3, (seen, pages)
    whole = request("GET", runs_path(app["id"]), token=token).json()
    assert [x["id"] for x in whole["items"]] == seen and whole["next_cursor"] is None
    expect_error(request("GET", runs_path(app["id"]) + "?cursor=abc", token=token), 422, "invalid_field")


def test_long_answer_deltas_are_coalesced_and_text_intact():
    evs = _completed_run("long-answer")
    with open(os.path.join(SCRIPTS, "long-answer.json")) as f:
        first = json.load(f)["steps"][0]
    chunks = -(-len(first["text"]) // first.get("chunk_size", 8))
    deltas = [e for e in evs if e["type"] == "assistant.delta" and e["payload"]["message_index"] == 0]
    assert "".join(d["payload"]["text"] for d in deltas) == first["text"]
    assert chunks >= 400 and len(deltas) * 10 <= chunks, (len(deltas), chunks)


def test_zz_logs_hold_neither_the_api_key_nor_the_db_password():
    # Named to run last in this module: the logs then hold every run above,
    # faults and retries included.
    key = os.environ.get("KILN_MODEL_API_KEY")
    with open(ENV["KILN_CONFIG"]) as f:
        password = re.search(r"^db_password = (\S+)$", f.read(), re.M).group(1)
    assert key and len(password) >= 16
    logs = glob.glob(os.path.join(ENV["KILN_STATE"], "log", "*.log"))
    names = {os.path.basename(p) for p in logs}
    assert {"kiln-runner.log", "kiln-api.log", "model.log"} <= names, names
    for path in logs:
        with open(path, "rb") as f:
            text = f.read()
        assert text or not path.endswith(("kiln-runner.log", "kiln-api.log")), path
        assert key.encode() not in text, "the API key is in %s" % path
        assert password.encode() not in text, "the database password is in %s" % path
    # the key was in use: the model saw it on every request
    with open(os.path.join(ENV["KILN_STATE"], "stack.kiln-env")) as f:
        assert key in f.read()


# ---- bad input -------------------------------------------------------------


def test_bad_input_on_the_run_routes():
    token = org()
    app = new_app(token)
    other_app = new_app(token)
    base = runs_path(app["id"])
    r = request("POST", base, raw=b'{"input": "x",', token=token, headers={"Content-Type": "application/json"})
    expect_error(r, 400, "malformed_json")
    err = expect_error(request("POST", base, {"client_request_id": "a"}, token=token), 422, "missing_field")
    assert err["field"] == "input", err
    for bad in ("", 5, None, ["x"]):
        err = expect_error(request("POST", base, {"input": bad}, token=token), 422)
        assert err["field"] == "input", (bad, err)
    err = expect_error(request("POST", base, {"input": "x" * 100001}, token=token), 422, "invalid_field")
    assert err["field"] == "input", err
    err = expect_error(request("POST", base, {"input": "x", "client_request_id": "k" * 129}, token=token), 422)
    assert err["field"] == "client_request_id", err
    assert request("GET", base, token=token).json()["items"] == []  # nothing was created

    run = start_run(token, app["id"], "hello %s" % unique("n"))
    wait_run(token, app["id"], run["id"])
    rid = run["id"]
    # Unknown ids, and a run asked for under the wrong app or organization.
    _, stranger = new_org()
    for tok, app_id, run_id in ((token, app["id"], rid + 100000), (token, other_app["id"], rid),
                                (stranger, app["id"], rid)):
        for method, tail, body in (("GET", "", None), ("POST", "/cancel", {}), ("GET", "/events", None)):
            expect_error(request(method, runs_path(app_id, run_id, tail), body, token=tok), 404, "not_found")
        s = Stream(tok, app_id, run_id)
        assert s.status == 404, s.status
        assert json.loads(s.resp.read())["error"]["code"] == "not_found"
        s.close()
    expect_error(request("GET", runs_path(999999), token=token), 404, "not_found")
    # Wrong methods.
    for method, tail in (("DELETE", ""), ("PATCH", ""), ("GET", "/cancel"), ("POST", "/events")):
        r = request(method, runs_path(app["id"], rid, tail), token=token)
        expect_error(r, 405, "method_not_allowed")
        assert r.header("Allow"), r.headers
    r = request("PUT", base, {"input": "x"}, token=token)
    expect_error(r, 405, "method_not_allowed")
    assert "POST" in r.header("Allow") and "GET" in r.header("Allow"), r.headers
    r = request("POST", runs_path(app["id"], rid, "/stream"), {}, token=token)
    expect_error(r, 405, "method_not_allowed")
    assert r.header("Allow") == "GET", r.headers
    # Bad resume points.
    for v in ("abc", "-1", "1.5", "99999999999", "1e3", " 2"):
        q = "?after=" + v.replace(" ", "%20")
        err = expect_error(request("GET", runs_path(app["id"], rid, "/events" + q), token=token), 422, "invalid_field")
        assert err["field"] == "after", (v, err)
        r = request("GET", runs_path(app["id"], rid, "/stream" + q), token=token)
        err = expect_error(r, 422, "invalid_field")
        assert err["field"] == "after", (v, err)
        if v.strip() != v:
            continue  # header values lose their leading blanks on the way
        r = request("GET", runs_path(app["id"], rid, "/stream"), token=token, headers={"Last-Event-ID": v})
        err = expect_error(r, 422, "invalid_field")
        assert err["field"] == "Last-Event-ID", (v, err)
    for v in ("0", "1001", "x"):
        err = expect_error(request("GET", runs_path(app["id"], rid, "/events?limit=" + v), token=token), 422)
        assert err["field"] == "limit", err
    # Without a token, streams are refused like every route.
    r = request("GET", runs_path(app["id"], rid, "/stream"))
    expect_error(r, 401, "unauthorized")
