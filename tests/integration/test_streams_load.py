"""The stream serving model under load: 300 SSE streams held open at once on
live runs, read by one selector loop over non-blocking sockets. Every stream
must get every event of its run, in order and gapless; the other API routes
must keep answering quickly meanwhile; and the stream pool must keep its
processes (streams are threads of a few processes, not a process each).
The benchmark version (1,000 streams, memory per stream) is `make bench`."""

import collections
import os
import selectors
import socket
import threading
import time

from kiln_test import ENV, new_app, new_org, request

STREAMS = 300
RUNS = 6                 # 50 streams per run; fits the suite's 2 x 4 runner slots
API_LIMIT_MS = 200
INFLIGHT = 64            # streams between connect and response head at once


class _Stream:
    """One SSE stream over HTTP/1.1 (nginx answers chunked)."""

    def __init__(self, app_id, run_id, token):
        self.run_id = run_id
        self.req = ("GET /admin/apps/%d/coding-agent/runs/%d/stream HTTP/1.1\r\n"
                    "Host: %s:%d\r\nAuthorization: Bearer %s\r\nAccept: text/event-stream\r\n"
                    "Connection: close\r\n\r\n" % (app_id, run_id, ENV["host"], ENV["port"], token)).encode()
        self.sock = None
        self.state = "idle"          # connecting, head, body, done
        self.head = b""
        self.status = None
        self.chunked = False
        self.raw = bytearray()       # body bytes not yet de-chunked
        self.chunk_left = -1         # -1: a size line comes next
        self.text = bytearray()      # SSE bytes not yet split into lines
        self.events = []             # (id, type) in arrival order
        self.cur = {}
        self.ended_cleanly = False

    def start(self, sel):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex((ENV["host"], ENV["port"]))
        self.state = "connecting"
        sel.register(self.sock, selectors.EVENT_WRITE, self)

    def close(self, sel):
        if self.sock:
            sel.unregister(self.sock)
            self.sock.close()
            self.sock = None
        self.state = "done"

    def on_ready(self, sel):
        if self.state == "connecting":
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.close(sel)
                return
            sent = self.sock.send(self.req)
            self.req = self.req[sent:]
            if not self.req:
                self.state = "head"
                sel.modify(self.sock, selectors.EVENT_READ, self)
            return
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(sel)
            return
        if self.state == "head":
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, rest = self.head.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.chunked = any(l.lower().startswith("transfer-encoding:") and "chunked" in l.lower()
                               for l in lines[1:])
            if self.status != 200:
                self.close(sel)
                return
            self.state = "body"
            data = rest
        self._body(data, sel)

    def _body(self, data, sel):
        if not self.chunked:
            self._sse(data)
            return
        self.raw += data
        while True:
            if self.chunk_left < 0:
                i = self.raw.find(b"\r\n")
                if i < 0:
                    return
                size = int(bytes(self.raw[:i]).split(b";")[0], 16)
                del self.raw[:i + 2]
                if size == 0:
                    self.ended_cleanly = True
                    self.close(sel)
                    return
                self.chunk_left = size
            if len(self.raw) < self.chunk_left + 2:
                return
            self._sse(bytes(self.raw[:self.chunk_left]))
            del self.raw[:self.chunk_left + 2]
            self.chunk_left = -1

    def _sse(self, data):
        self.text += data
        while True:
            i = self.text.find(b"\n")
            if i < 0:
                return
            line = bytes(self.text[:i]).rstrip(b"\r").decode()
            del self.text[:i + 1]
            if not line:
                if "id" in self.cur:
                    self.events.append((self.cur["id"], self.cur.get("event")))
                self.cur = {}
            elif line.startswith("id: "):
                self.cur["id"] = int(line[4:])
            elif line.startswith("event: "):
                self.cur["event"] = line[7:]


def _stream_pool():
    """kiln-api master's children that run threads: pid -> thread count."""
    with open(os.path.join(ENV["KILN_STATE"], "run", "kiln-api.pid")) as f:
        master = int(f.read())
    pool = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/status" % pid) as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(st.get("PPid", "0")) == master and int(st["Threads"]) > 1:
            pool[int(pid)] = int(st["Threads"])
    return pool


def _run_events(token, app_id, run_id):
    """The run's whole event log through the events API: [(seq, type)]."""
    out, after = [], 0
    while True:
        r = request("GET", "/admin/apps/%d/coding-agent/runs/%d/events?after=%d&limit=1000"
                    % (app_id, run_id, after), token=token)
        assert r.status == 200, r
        page = r.json()
        out += [(e["seq"], e["type"]) for e in page["items"]]
        after = page["next_after"]
        if not page["items"]:
            return out, page["terminal"]


def _probe_api(token, app_id, run_id, results, stop):
    """Other routes, one after another, while the streams are open."""
    paths = ["/admin/apps/%d" % app_id, "/admin/apps/%d/coding-agent/runs/%d" % (app_id, run_id),
             "/admin/apps?limit=5", "/admin/health"]
    i = 0
    while not stop.is_set() and i < 40:
        path = paths[i % len(paths)]
        t = time.monotonic()
        r = request("GET", path, token=token, timeout=10)
        results.append((path, r.status, (time.monotonic() - t) * 1000))
        i += 1
        time.sleep(0.05)


def test_300_streams_on_live_runs_gapless_while_api_answers():
    _, token = new_org()
    pool_before = _stream_pool()
    assert pool_before, "no stream process under kiln-api's master"
    apps = [new_app(token)["id"] for _ in range(RUNS)]
    runs = []
    for a in apps:
        r = request("POST", "/admin/apps/%d/coding-agent/runs" % a, {"input": "hold on [script:slow]"}, token=token)
        assert r.status == 202, r
        runs.append(r.json()["id"])
    streams = [_Stream(apps[i % RUNS], runs[i % RUNS], token) for i in range(STREAMS)]

    sel = selectors.DefaultSelector()
    todo = collections.deque(streams)
    probes, stop = [], threading.Event()
    prober = None
    pool_during = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            pending = sum(1 for s in streams if s.state in ("connecting", "head"))
            while todo and pending < INFLIGHT:
                todo.popleft().start(sel)
                pending += 1
            if not todo and not pending and prober is None:
                # Every stream has its answer: hold them and probe the rest
                # of the API meanwhile.
                pool_during = _stream_pool()
                prober = threading.Thread(target=_probe_api, args=(token, apps[0], runs[0], probes, stop))
                prober.start()
            if all(s.state == "done" for s in streams):
                break
            for key, _ in sel.select(timeout=0.05):
                key.data.on_ready(sel)
    finally:
        stop.set()
        if prober:
            prober.join(30)
        for s in streams:
            s.close(sel)
        sel.close()
    pool_after = _stream_pool()

    bad = [s.status for s in streams if s.status != 200]
    assert not bad, "%d streams not answered 200: %s" % (len(bad), bad[:5])
    assert all(s.ended_cleanly for s in streams), "some streams did not end after the terminal event"
    logs = {}
    for a, r in zip(apps, runs):
        log, terminal = _run_events(token, a, r)
        assert terminal, "run %d did not end" % r
        assert [seq for seq, _ in log] == list(range(1, len(log) + 1)), "run %d: event log not gapless" % r
        assert log[-1][1] in ("run.completed", "run.failed"), log[-1]
        logs[r] = log
    for s in streams:
        assert s.events == logs[s.run_id], (
            "run %d: a stream got %d events (ids %s...), the log has %d"
            % (s.run_id, len(s.events), [i for i, _ in s.events[:5]], len(logs[s.run_id])))
    assert min(len(l) for l in logs.values()) > 20, "the runs were not live: %s" % {
        r: len(l) for r, l in logs.items()}

    assert pool_during is not None
    assert sorted(pool_during) == sorted(pool_before) == sorted(pool_after), (
        "stream processes changed: %s -> %s -> %s" % (pool_before, pool_during, pool_after))
    assert sum(pool_during.values()) >= STREAMS, "streams are not threads of the pool: %s" % pool_during

    assert len(probes) >= 8, probes
    slow = [p for p in probes if p[1] != 200 or p[2] > API_LIMIT_MS]
    assert not slow, "API answers during the hold: %s" % slow
