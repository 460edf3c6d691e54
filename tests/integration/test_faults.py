"""Faults that take under a minute each: runners killed at random moments,
MariaDB restarted mid-run, a stream process killed mid-stream, the
checkpoint disk full. The long versions live in tools/soak."""

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

from kiln_test import (ENV, eventually, expect_error, kilnctl, load_env, new_app, new_org, request,
                       stack, visible_text)

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


# ---------------------------------------------------------------- workspaces

IGNORED_DIRS = ("node_modules", "dist", ".git")  # never in a manifest (workspace.c)
TEMP_FILE = re.compile(r"(^|/)\.kiln-tmp-[0-9a-f]+$")  # a workspace write cut short


def workspace_manifest(app_id, state_dir=None):
    """{path: (size, sha256)} of the app's draft workspace on disk, as Kiln
    sees it: without ignored folders and leftover temp files."""
    root = os.path.join(state_dir or ENV["KILN_STATE"], "workspaces", str(app_id))
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in IGNORED_DIRS]
        for name in files:
            p = os.path.join(d, name)
            if TEMP_FILE.search(name):
                continue
            with open(p, "rb") as f:
                data = f.read()
            out[os.path.relpath(p, root)] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def manifest_of(token, app_id, kind, object_id):
    """{path: (size, sha256)} of a revision or checkpoint, from the API."""
    if kind == "revisions":
        path = "/admin/apps/%d/revisions/%d" % (app_id, object_id)
    else:
        path = "/admin/apps/%d/coding-agent/checkpoints/%d" % (app_id, object_id)
    r = request("GET", path, token=token)
    assert r.status == 200, r
    return {f["path"]: (f["size"], f["sha256"]) for f in r.json()["files"]}


def draft_manifest(token, app_id):
    draft = request("GET", "/admin/apps/%d" % app_id, token=token).json()["draft_revision_id"]
    return manifest_of(token, app_id, "revisions", draft) if draft else {}


def differing_paths(a, b):
    return {p for p in set(a) | set(b) if a.get(p) != b.get(p)}


def touched_paths(evs):
    """Paths a run's file tools named (the soak's commands write nothing)."""
    out = set()
    for e in evs:
        if e["type"] == "tool.started":
            args = e["payload"].get("arguments") or {}
            out |= {args[k] for k in ("path", "from", "to") if isinstance(args.get(k), str)}
        elif e["type"] == "run.failed":
            out |= set(e["payload"].get("changed_files") or [])
    return out


def workspace_problems(token, app_id, runs, state_dir=None):
    """What is wrong with an app's workspace once all its runs (oldest first)
    ended: [] when it is the draft revision exactly, or, after runs that
    stopped part way, the draft but for files those runs wrote. A restore
    (a rollback) swaps the whole tree, so a half-restored workspace shows as
    files of neither tree. A leftover temp file of a write cut short may stay
    on disk, but must never be part of a revision."""
    disk = workspace_manifest(app_id, state_dir)
    draft = draft_manifest(token, app_id)
    problems = ["temp file of a cut-short write recorded in the draft revision: %s" % p
                for p in sorted(draft) if TEMP_FILE.search(p)]
    allowed = set()
    for run_id in reversed(runs):
        evs = events(token, app_id, run_id)
        last = evs[-1] if evs else {"type": "?", "payload": {}}
        if last["type"] == "run.completed" or last["payload"].get("rolled_back"):
            break  # the workspace was recorded (or put back) whole here
        allowed |= touched_paths(evs)
    stray = differing_paths(disk, draft) - allowed
    if stray:
        problems.append("app %d: workspace differs from draft revision at %s" % (app_id, sorted(stray)[:10]))
    return problems


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
    problems = [p for app_id, run_id in runs for p in workspace_problems(token, app_id, [run_id])]
    assert not problems, problems


def test_temp_file_of_a_cut_short_write_never_reaches_a_revision():
    # What a runner killed inside a workspace write leaves behind (the soak
    # found such a file recorded in a revision): the name is reserved.
    _, token = new_org()
    app = new_app(token, {"index.html": "<h1>t</h1>"})
    aid = app["id"]
    ws = os.path.join(ENV["KILN_STATE"], "workspaces", str(aid))
    os.makedirs(os.path.join(ws, "css"), exist_ok=True)
    for leftover in (".kiln-tmp-0123456789abcdef", "css/.kiln-tmp-fedcba9876543210"):
        with open(os.path.join(ws, leftover), "w") as f:
            f.write("half a file")
    r = request("POST", "/admin/apps/%d/revisions" % aid, {"files": {"css/a.css": "a {}"}, "replace": False},
                token=token)
    assert r.status == 201, r
    assert sorted(f["path"] for f in r.json()["files"]) == ["css/a.css", "index.html"], r.json()["files"]
    run_id = start_run(token, aid, "[script:echo-tools] go")
    wait_terminal(token, aid, run_id)
    assert_run_log_sound(token, aid, run_id)
    assert not workspace_problems(token, aid, [run_id])
    err = expect_error(request("POST", "/admin/apps/%d/revisions" % aid,
                               {"files": {".kiln-tmp-1": "x"}, "replace": False}, token=token), 422)
    assert err["field"] == "files" and "reserved" in err["message"], err


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


# ---------------------------------------------------------------- disk full

SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


class PrivateStack:
    """A stack of its own in a fresh folder whose checkpoints/ is a small
    tmpfs where the machine lets us mount one; elsewhere (or with
    KILN_TEST_DISKFULL_INJECT=1) its disk is filled by the ENOSPC injection
    of src/fileutil.c instead. While it runs, kiln_test's ENV points at it."""

    def __init__(self, tmpfs_mib=8):
        self.dir = tempfile.mkdtemp(prefix="kiln-diskfull.")
        os.chmod(self.dir, 0o755)
        self.store = os.path.join(self.dir, "checkpoints")
        os.mkdir(self.store)
        self.mounted = False
        if os.environ.get("KILN_TEST_DISKFULL_INJECT") != "1":
            self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % tmpfs_mib, "tmpfs", self.store],
                                          capture_output=True).returncode == 0
        self.filler = os.path.join(self.store, "filler")  # not an archive name: the store ignores it
        self.saved_env = dict(ENV)
        self.tool = os.path.join(ENV["ROOT"], "tools", "stack")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()

    def __enter__(self):
        self._start({})
        return self

    def _start(self, extra_env):
        env = dict(os.environ, **extra_env)
        subprocess.run([self.tool, "start", self.dir, "--port", str(self.port), "--build", self.saved_env["KILN_BUILD"],
                        "--runners", "1"], check=True, env=env, capture_output=True, timeout=120)
        load_env(os.path.join(self.dir, "stack.env"))
        eventually(lambda: request("GET", "/admin/health").status == 200, timeout=30, what="the private stack")

    def _restart_services(self, extra_env):
        """kiln-api and the runner again, with extra_env in their environment."""
        subprocess.run([self.tool, "kill-runner", self.dir], check=True, capture_output=True)
        pidfile = os.path.join(self.dir, "run", "kiln-api.pid")
        pid = int(open(pidfile).read())
        os.kill(pid, signal.SIGTERM)
        eventually(lambda: not os.path.exists("/proc/%d" % pid) or
                   open("/proc/%d/stat" % pid).read().split(")")[-1].split()[0] == "Z",
                   timeout=30, what="kiln-api to stop")
        os.unlink(pidfile)
        self._start(extra_env)

    def fill(self):
        """The checkpoint disk from now on has no room left."""
        if not self.mounted:
            self._restart_services({"KILN_FAULT_ENOSPC": self.store})
            return
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for chunk in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)

    def free(self):
        if not self.mounted:
            self._restart_services({})
        else:
            os.unlink(self.filler)

    def archives(self):
        """{name: sha256 of the bytes} of every archive in the store."""
        out = {}
        for d, dirs, files in os.walk(self.store):
            dirs[:] = [x for x in dirs if x != "tmp"]
            for name in files:
                p = os.path.join(d, name)
                if p != self.filler and not name.startswith("."):
                    with open(p, "rb") as f:
                        out[os.path.relpath(p, self.store)] = hashlib.sha256(f.read()).hexdigest()
        return out

    def sanitizer_reports(self):
        logs = os.path.join(self.dir, "log")
        return [n for n in os.listdir(logs)
                if SANITIZER_REPORT.search(open(os.path.join(logs, n), errors="replace").read())]

    def __exit__(self, *exc):
        if exc[0]:  # what the private stack logged goes where the suite's logs go
            out = os.environ.get("KILN_TEST_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                  "..", "out")
            shutil.copytree(os.path.join(self.dir, "log"), os.path.join(out, "logs", "private-stack"),
                            dirs_exist_ok=True)
        try:
            subprocess.run([self.tool, "stop", self.dir], capture_output=True, timeout=120)
        finally:
            ENV.clear()
            ENV.update(self.saved_env)
            if self.mounted:
                subprocess.run(["umount", "-l", self.store], capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)


def _verify_store():
    out = kilnctl("checkpoint", "verify", check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def app_with_two_uploads(token):
    """A new app whose draft is its second upload (two manual checkpoints)."""
    aid = new_app(token, {"index.html": "<h1>one</h1>", "style.css": "h1 { color: red }"})["id"]
    r = request("POST", "/admin/apps/%d/revisions" % aid,
                {"files": {"index.html": "<h1>two</h1>", "app.js": "console.log(2)"}}, token=token)
    assert r.status == 201, r
    return aid


def test_full_checkpoint_disk_fails_cleanly_and_damages_nothing():
    with PrivateStack() as st:
        _, token = new_org()
        aid = app_with_two_uploads(token)
        ckpts = request("GET", "/admin/apps/%d/coding-agent/checkpoints" % aid, token=token).json()["items"]
        assert len(ckpts) == 2, ckpts
        stored = {c["id"]: manifest_of(token, aid, "checkpoints", c["id"]) for c in ckpts}
        draft = request("GET", "/admin/apps/%d" % aid, token=token).json()["draft_revision_id"]
        archives = st.archives()
        rows = _sql_counts(st)

        st.fill()
        # a run's checkpoint at its end cannot be written: the run fails
        # with a code that says so, its log complete, no revision recorded
        run_id = start_run(token, aid, "[script:default] build it")
        wait_terminal(token, aid, run_id, timeout=120)
        run = assert_run_log_sound(token, aid, run_id)
        assert run["status"] == "failed" and run["error"]["code"] == "checkpoint_failed", run
        failed = events(token, aid, run_id)[-1]["payload"]
        assert failed["changed_files"], failed  # the run's work is still in the workspace
        # an upload cannot be recorded either: a JSON error, nothing stored
        r = request("POST", "/admin/apps/%d/revisions" % aid, {"files": {"index.html": "<h1>three</h1>"}}, token=token)
        expect_error(r, 507, "insufficient_storage")
        assert request("GET", "/admin/apps/%d" % aid, token=token).json()["draft_revision_id"] == draft
        assert _sql_counts(st) == rows
        assert st.archives() == archives, "an archive stored before changed"
        assert not os.listdir(os.path.join(st.store, "tmp")), "a failed write left a temp file"
        _verify_store()
        for cid, files in stored.items():  # still readable while the disk is full
            for path, (size, sha) in files.items():
                r = request("GET", "/admin/apps/%d/coding-agent/checkpoints/%d/files/%s"
                            % (aid, cid, urllib.parse.quote(path)), token=token)
                assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == sha, (cid, path, r)

        st.free()
        # the old checkpoints restore whole, and work goes on
        for cid in sorted(stored):
            r = request("POST", "/admin/apps/%d/coding-agent/checkpoints/%d/restore" % (aid, cid), {}, token=token)
            assert r.status == 200, r
            assert workspace_manifest(aid, st.dir) == stored[cid], "restore of checkpoint %d" % cid
        run_id = start_run(token, aid, "[script:default] build it again")
        wait_terminal(token, aid, run_id, timeout=120)
        assert assert_run_log_sound(token, aid, run_id)["status"] == "completed"
        assert not workspace_problems(token, aid, [run_id], st.dir)
        _verify_store()
        assert not st.sanitizer_reports(), st.sanitizer_reports()
        print("     disk full by %s" % ("a %s tmpfs" % "8 MiB" if st.mounted else "injected ENOSPC"))


def _sql_counts(st):
    sock = os.path.join(st.dir, "run", "mysql.sock")
    return subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-N", "kiln", "-e",
                           "SELECT (SELECT COUNT(*) FROM app_revisions), (SELECT COUNT(*) FROM checkpoints)"],
                          capture_output=True, text=True, check=True).stdout


def test_rollback_after_the_run_revision_was_recorded_moves_the_draft_back():
    # The runner dies just after the run's revision became the draft, before
    # any event said so; the user then cancels with rollback. The resumed
    # attempt must undo the files AND the draft, or a publish would build
    # the files the user rolled back.
    _, token = new_org()
    app = new_app(token, {"index.html": "<h1>before</h1>"})
    aid = app["id"]
    base_draft = app["draft_revision_id"]
    before = workspace_manifest(aid)
    stack("kill-runner")
    # the run's child dies with its runner: nobody resumes it before the cancel
    armed = dict(os.environ, KILN_CRASH_POINT="run_recorded:1:parent")
    subprocess.run([os.path.join(ENV["ROOT"], "tools", "stack"), "start-runner", ENV["KILN_STATE"]],
                   check=True, timeout=120, capture_output=True, env=armed)
    try:
        run_id = start_run(token, aid, "[script:default] build it")
        eventually(lambda: request("GET", "/admin/apps/%d" % aid, token=token).json()["draft_revision_id"]
                   != base_draft, timeout=60, what="the run's revision to become the draft")
    finally:
        stack("kill-runner")  # gone already; this clears its pid file
    run = request("GET", "/admin/apps/%d/coding-agent/runs/%d" % (aid, run_id), token=token).json()
    assert run["status"] == "running", run
    r = request("POST", "/admin/apps/%d/coding-agent/runs/%d/cancel" % (aid, run_id), {"mode": "rollback"},
                token=token)
    assert r.status in (200, 202), r
    stack("start-runner")
    wait_terminal(token, aid, run_id)
    run = assert_run_log_sound(token, aid, run_id)
    assert run["status"] == "cancelled", run
    assert events(token, aid, run_id)[-1]["payload"]["rolled_back"] is True
    # the files are the ones from before the run, and so is the draft
    assert workspace_manifest(aid) == before
    assert draft_manifest(token, aid) == before
    draft = request("GET", "/admin/apps/%d" % aid, token=token).json()["draft_revision_id"]
    rev = request("GET", "/admin/apps/%d/revisions/%d" % (aid, draft), token=token).json()
    assert rev["origin"] == "restore", rev
    assert not workspace_problems(token, aid, [run_id])


# ------------------------------------------- a COMMIT whose outcome is unknown

def _runner_log_count(text):
    with open(os.path.join(ENV["KILN_STATE"], "log", "kiln-runner.log"), errors="replace") as fh:
        return sum(text in line for line in fh)


def _runners_with(**env):
    """Restarts the runners with env added (faults armed), or plain."""
    stack("kill-runner")
    e = {k: v for k, v in os.environ.items() if not k.startswith("KILN_FAULT_")}
    e.update(env)
    subprocess.run([os.path.join(ENV["ROOT"], "tools", "stack"), "start-runner", ENV["KILN_STATE"]],
                   check=True, timeout=120, capture_output=True, env=e)


def _run_is_whole(token, aid, run_id):
    """Completed once, every event once, each tool call ended once, and
    the workspace is the draft the run recorded."""
    run = assert_run_log_sound(token, aid, run_id)
    assert run["status"] == "completed", run
    ends = {}
    for e in events(token, aid, run_id):
        if e["type"] in ("tool.completed", "tool.failed"):
            ends[e["payload"]["call_id"]] = ends.get(e["payload"]["call_id"], 0) + 1
    assert ends and set(ends.values()) == {1}, ("a tool call ended twice", ends)
    assert not workspace_problems(token, aid, [run_id])
    return run


FAULT_FIRED = "injected fault: connection lost during COMMIT"


def _run_with_commit_cut(token, aid, n, mode):
    """A default run whose first attempt has its n-th COMMIT cut (mode
    before: rolled back, after: committed): True when the run got that
    far (the fault fired), and in any case the run is whole."""
    seen = _runner_log_count(FAULT_FIRED)
    _runners_with(KILN_FAULT_RUN_COMMIT="%d:%s" % (n, mode))
    run_id = start_run(token, aid, "[script:default] build it")
    wait_terminal(token, aid, run_id)
    _run_is_whole(token, aid, run_id)
    return _runner_log_count(FAULT_FIRED) > seen


def sweep_commit_faults(every=False):
    """Cuts COMMITs of a run's first attempt (the event appends, the
    revision + checkpoint, the terminal event): every one of them in both
    modes with every (tools/soak), else the first few, a few in the middle
    and the last few (where the revision, checkpoint and terminal event
    commit) in both modes. Returns how many cuts fired."""
    _, token = new_org()
    aid = new_app(token, {"index.html": "<h1>before</h1>"})["id"]
    fired = 0
    try:
        _runners_with()
        clean = start_run(token, aid, "[script:default] build it")
        wait_terminal(token, aid, clean)
        total = len(events(token, aid, clean))  # about one COMMIT per event
        if every:
            points = [(n, m) for n in range(1, total + 8) for m in ("before", "after")]
        else:
            points = ([(1, "before"), (2, "after"), (total // 2, "before")] +
                      [(n, m) for n in range(total - 2, total + 8) for m in ("before", "after")])
        misses = 0
        for n, mode in points:
            if _run_with_commit_cut(token, aid, n, mode):
                fired += 1
                misses = 0
            else:
                misses += 1  # the run made fewer than n COMMITs
                if misses == 2:
                    break
        assert misses == 2, "the last COMMIT of a run was not reached: %d points" % len(points)
    finally:
        _runners_with()
    return fired


def test_connection_lost_during_commit_loses_and_doubles_nothing():
    # The client cannot tell whether a COMMIT whose connection broke went
    # through, so the attempt must stop without another write and the run
    # resume from what the database holds: completed once, nothing lost,
    # nothing twice.
    assert sweep_commit_faults() >= 8


def test_runner_claim_cut_short_or_fork_failure_still_runs_the_run():
    # The runner's own claim COMMIT lost (rolled back: the run is still
    # queued; committed: claimed with no child, so its lease lapses) and a
    # fork that fails: the run still runs, once.
    _, token = new_org()
    aid = new_app(token, {"index.html": "<h1>before</h1>"})["id"]
    try:
        for env in ({"KILN_FAULT_RUNNER_COMMIT": "1:before"}, {"KILN_FAULT_RUNNER_COMMIT": "1:after"},
                    {"KILN_FAULT_FORK": "2"}):
            _runners_with(**env)
            run_id = start_run(token, aid, "[script:default] build it")
            wait_terminal(token, aid, run_id, timeout=60)
            run = _run_is_whole(token, aid, run_id)
            if "KILN_FAULT_FORK" in env:
                assert _runner_log_count("cannot start a child") >= 2, "the forks did not fail"
    finally:
        _runners_with()
