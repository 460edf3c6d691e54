#!/usr/bin/env python3
"""Kiln's benchmarks, run by tools/bench/run-bench against a private stack it
started. Every figure is measured together with a baseline taken in the same
run (a bare libfcgi responder, tar, git, the unloaded system) and written to
docs/PERFORMANCE.md with the machine it ran on. Python standard library only.

usage: bench.py --state DIR --tools DIR --out FILE [--only NAME,...] [--json FILE]
Benchmarks (in run order): api dbcost checkpoints runner streams latency.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import resource
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T0 = time.time()


def log(msg):
    print("bench %5.1fs: %s" % (time.time() - T0, msg), file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the stack

class Stack:
    def __init__(self, state, tools):
        self.state = state
        self.tools = tools
        self.env = {}
        with open(os.path.join(state, "stack.env")) as f:
            for line in f:
                if "=" in line:
                    k, v = line.strip().split("=", 1)
                    self.env[k] = v
        u = urllib.parse.urlparse(self.env["KILN_URL"])
        self.host, self.port = u.hostname, u.port
        self.build = self.env["KILN_BUILD"]
        self.config = self.env["KILN_CONFIG"]
        self.sock = os.path.join(state, "run", "mysql.sock")
        self.cfg = self.kiln_config()
        slug = "bench-%d" % os.getpid()
        self.kilnctl("org", "create", slug, "Benchmarks")
        self.org = slug
        self.token = self.kilnctl("token", "create", slug, "--name", "bench").strip()
        self.napps = 0

    def kilnctl(self, *args):
        p = subprocess.run([os.path.join(self.build, "bin", "kilnctl"), "--config", self.config, *args],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("kilnctl %s: %s" % (" ".join(args), p.stderr.strip()))
        return p.stdout

    def kiln_config(self):
        cfg = {}
        for line in self.kilnctl("config").splitlines():
            if " = " in line:
                k, v = line.split(" = ", 1)
                cfg[k.strip()] = v.strip()
        return cfg

    def sql(self, query):
        p = subprocess.run(["mariadb", "--no-defaults", "-S", self.sock, "-u", "root", "-N", "-B",
                            "kiln", "-e", query], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("sql %r: %s" % (query[:80], p.stderr.strip()))
        return [line.split("\t") for line in p.stdout.splitlines()]

    def request(self, method, path, body=None, timeout=30):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        h = {"Authorization": "Bearer " + self.token}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        t = time.perf_counter()
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            raw = r.read()
            ms = (time.perf_counter() - t) * 1000
            return r.status, raw, ms
        finally:
            conn.close()

    def new_app(self):
        self.napps += 1
        slug = "b%d-%d" % (os.getpid() % 100000, self.napps)
        st, raw, _ = self.request("POST", "/admin/apps", {"name": "Bench " + slug, "slug": slug})
        if st != 201:
            raise RuntimeError("app create: %d %r" % (st, raw[:200]))
        return json.loads(raw)["id"]

    def submit_run(self, app_id, script):
        st, raw, _ = self.request("POST", "/admin/apps/%d/coding-agent/runs" % app_id,
                                  {"input": "benchmark run [script:%s]" % script})
        if st not in (200, 202):
            raise RuntimeError("run submit: %d %r" % (st, raw[:200]))
        return json.loads(raw)["id"]

    def wait_runs(self, run_ids, timeout):
        """Waits until every run is terminal; returns {id: status}."""
        ids = ",".join(str(i) for i in run_ids)
        deadline = time.time() + timeout
        while True:
            rows = self.sql("SELECT id, status FROM agent_runs WHERE id IN (%s)" % ids)
            st = {int(r[0]): r[1] for r in rows}
            if all(s in ("completed", "failed", "cancelled") for s in st.values()) and len(st) == len(run_ids):
                return st
            if time.time() > deadline:
                raise RuntimeError("runs not finished after %ds: %s" % (timeout, st))
            time.sleep(0.2)

    def run_rows(self, run_ids):
        """id -> (status, event count, max seq, created ms, started ms, finished ms)."""
        ids = ",".join(str(i) for i in run_ids)
        rows = self.sql(
            "SELECT r.id, r.status, COALESCE(MAX(e.seq), 0), COUNT(e.seq), COALESCE(MAX(e.seq), 0), "
            "UNIX_TIMESTAMP(r.created_at) * 1000, UNIX_TIMESTAMP(r.started_at) * 1000, "
            "UNIX_TIMESTAMP(r.finished_at) * 1000 FROM agent_runs r "
            "LEFT JOIN agent_run_events e ON e.run_id = r.id WHERE r.id IN (%s) GROUP BY r.id" % ids)
        out = {}
        for r in rows:
            out[int(r[0])] = {"status": r[1], "last": int(r[2]), "count": int(r[3]), "max": int(r[4]),
                              "created": float(r[5]),
                              "started": float(r[6]) if r[6] != "NULL" else None,
                              "finished": float(r[7]) if r[7] != "NULL" else None}
        return out

    def api_master(self):
        with open(os.path.join(self.state, "run", "kiln-api.pid")) as f:
            return int(f.read().strip())

    def stream_processes(self):
        """The stream pool: kiln-api master's children with more than one
        thread (API workers are single-threaded; a stream process runs a
        poller and one thread per stream). pid -> (rss KiB, threads)."""
        master = self.api_master()
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/status" % pid) as f:
                    st = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if int(st.get("PPid", "0").strip()) != master:
                continue
            threads = int(st["Threads"].strip())
            if threads > 1:
                out[int(pid)] = (int(st["VmRSS"].split()[0]), threads)
        return out


def write_targets(path, pairs):
    with open(path, "w") as f:
        for app, run in pairs:
            f.write("%d %d\n" % (app, run))


def sse_load(stk, targets_file, streams, timeout, on_open=None, extra=()):
    """Runs tools/bench sse-load; calls on_open() once every stream is open
    (while they are held) and returns the parsed summary."""
    cmd = [os.path.join(stk.tools, "sse-load"), "--port", str(stk.port), "--token", stk.token,
           "--targets", targets_file, "--streams", str(streams), "--timeout", str(timeout), *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    during = None
    summary = None
    try:
        for line in p.stdout:
            if line.startswith("open "):
                if on_open:
                    during = on_open()
            elif line.startswith("{"):
                summary = json.loads(line)
        err = p.stderr.read()
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if summary is None:
        raise RuntimeError("sse-load gave no summary (exit %d): %s" % (p.returncode, err.strip()))
    summary["during"] = during
    return summary


def check_streams(stk, summary):
    """Every stream of every run got exactly the events the database holds,
    in order, without gaps or duplicates, ending with the terminal one."""
    runs = stk.run_rows([r["run_id"] for r in summary["runs"]])
    problems = []
    for r in summary["runs"]:
        db = runs[r["run_id"]]
        if not (db["last"] == db["count"] == db["max"]):
            problems.append("run %d: newest seq %d, %d rows, max seq %d" %
                            (r["run_id"], db["last"], db["count"], db["max"]))
        if not (r["min_events"] == r["max_events"] == r["min_last"] == r["max_last"] == db["last"]):
            problems.append("run %d: streams got %d..%d events (last id %d..%d), database has %d" %
                            (r["run_id"], r["min_events"], r["max_events"], r["min_last"],
                             r["max_last"], db["last"]))
    for k in ("gaps", "dups", "closed_early", "unfinished", "failed_open"):
        if summary[k]:
            problems.append("%s: %d" % (k, summary[k]))
    if summary["terminal"] != summary["streams"]:
        problems.append("%d of %d streams saw the terminal event" % (summary["terminal"], summary["streams"]))
    return problems, runs


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


# ---------------------------------------------------------------- machine

def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])

    def version(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": model, "memory": mem, "kernel": platform.release(),
        "load_before": load,
        "nofile": subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True, text=True).stdout.strip(),
        "mariadb": version(["mariadbd", "--version"]), "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "--version"]),
    }


# ---------------------------------------------------------------- API

def parse_wrk(out):
    def ms(v):
        m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
        n = float(m.group(1))
        return n / 1000 if m.group(2) == "us" else n if m.group(2) == "ms" else n * 1000 if m.group(2) == "s" else n * 60000
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for p in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % p, out, re.M)
        res["p" + p] = ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*", out)
    res["socket_errors"] = m.group(0) if m else ""
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return res


def wrk(url, token, conns, threads, secs):
    p = subprocess.run(["wrk", "-c", str(conns), "-t", str(threads), "-d", "%ds" % secs, "--latency",
                        "-H", "Authorization: Bearer " + token, url],
                       capture_output=True, text=True, timeout=secs + 60)
    if p.returncode != 0:
        raise RuntimeError("wrk failed: %s" % p.stderr)
    return parse_wrk(p.stdout)


def _proc_ticks(pid, with_reaped):
    """utime + stime of pid (all its threads), plus what its reaped children
    used when with_reaped (a master whose workers are replaced)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def _children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def cpu_ticks(masters):
    """CPU ticks of each named process tree {name: master pid}: the master,
    its live children, and the children it already reaped."""
    return {name: _proc_ticks(pid, True) + sum(_proc_ticks(c, False) for c in _children(pid))
            for name, pid in masters.items()}


def wrk_accounted(url, token, conns, threads, secs, masters):
    """wrk, plus the CPU each process tree (and wrk itself) spent per request
    in microseconds."""
    hz = os.sysconf("SC_CLK_TCK")
    before, ru0 = cpu_ticks(masters), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = wrk(url, token, conns, threads, secs)
    after, ru1 = cpu_ticks(masters), resource.getrusage(resource.RUSAGE_CHILDREN)
    n = max(r["requests"], 1)
    r["cpu_us"] = {name: (after[name] - before[name]) / hz * 1e6 / n for name in masters}
    # wrk is the one child that ran in between (pgrep's own share is noise)
    r["cpu_us"]["wrk"] = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) * 1e6 / n
    return r


API_ROUNDS, API_ROUND_SECS = 3, 6


def combine_rounds(rounds):
    """One figure from equal-length wrk rounds: requests/s over all of them,
    each latency percentile the median of the rounds', CPU per request
    weighted by each round's requests."""
    n = sum(r["requests"] for r in rounds)
    out = {"rps": sum(r["rps"] for r in rounds) / len(rounds), "requests": n,
           "non2xx": sum(r["non2xx"] for r in rounds),
           "socket_errors": "; ".join(r["socket_errors"] for r in rounds if r["socket_errors"])}
    for p in ("p50", "p75", "p90", "p99"):
        out[p] = statistics.median(r[p] for r in rounds)
    out["cpu_us"] = {name: sum(r["cpu_us"][name] * r["requests"] for r in rounds) / max(n, 1)
                     for name in rounds[0]["cpu_us"]}
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class BareBaseline:
    """bare-fcgi behind a second nginx rendered from the stack's own config
    (same top-level settings, same server block; only the API socket, the
    port and the private paths differ)."""

    def __init__(self, stk):
        self.stk = stk
        self.dir = os.path.join(stk.state, "bare")
        self.port = free_port()
        self.sock = os.path.join(self.dir, "bare.sock")
        self.fcgi = None
        self.nginx_args = None

    def start(self):
        st = self.stk.state
        d = self.dir
        os.makedirs(os.path.join(d, "log"), exist_ok=True)
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        with open(os.path.join(st, "nginx", "nginx.conf")) as f:
            top = f.read()
        with open(os.path.join(st, "nginx", "kiln-site.conf")) as f:
            site = f.read()
        top = (top.replace(st + "/nginx/kiln-site.conf", d + "/site.conf")
               .replace(st + "/nginx/tmp", d + "/tmp")
               .replace(st + "/run/nginx.pid", d + "/nginx.pid")
               .replace(st + "/log/", d + "/log/"))
        site = (site.replace(st + "/run/kiln-api.sock", self.sock)
                .replace("127.0.0.1:%d" % self.stk.port, "127.0.0.1:%d" % self.port))
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(top)
        with open(os.path.join(d, "site.conf"), "w") as f:
            f.write(site)
        shutil.copy(os.path.join(st, "nginx", "fastcgi_params"), os.path.join(d, "fastcgi_params"))
        self.fcgi = subprocess.Popen([os.path.join(self.stk.tools, "bare-fcgi"), self.sock,
                                      self.stk.cfg["workers"]])
        for _ in range(100):
            if os.path.exists(self.sock):
                break
            time.sleep(0.05)
        self.nginx_args = ["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"),
                           "-e", os.path.join(d, "log", "error.log")]
        subprocess.run(self.nginx_args, check=True, timeout=30)
        for _ in range(100):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/admin/apps/1/coding-agent/runs/1")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the baseline nginx + bare-fcgi did not answer")

    def stop(self):
        if self.nginx_args:
            subprocess.run(self.nginx_args + ["-s", "quit"], timeout=30, capture_output=True)
            self.nginx_args = None
        if self.fcgi:
            self.fcgi.send_signal(signal.SIGTERM)
            self.fcgi.wait(timeout=30)
            self.fcgi = None


def perf_profile(url, token, secs=4):
    """System-wide perf samples while wrk loads the API: share per process
    and the hottest symbols of kiln-api. None if perf is unusable."""
    if not shutil.which("perf"):
        return None
    tmp = tempfile.mkdtemp(prefix="kiln-bench-perf.")
    data = os.path.join(tmp, "perf.data")
    w = subprocess.Popen(["wrk", "-c", "32", "-t", "2", "-d", "%ds" % (secs + 2), "-H",
                          "Authorization: Bearer " + token, url],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        p = subprocess.run(["perf", "record", "-a", "-F", "999", "-o", data, "--", "sleep", str(secs)],
                           capture_output=True, text=True, timeout=secs + 30)
        w.wait(timeout=secs + 30)
        if p.returncode != 0:
            return None

        def report(*args):
            r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", *args],
                               capture_output=True, text=True, timeout=120)
            rows = []
            for line in r.stdout.splitlines():
                m = re.match(r"^\s+([\d.]+)%\s+(.*\S)\s*$", line)
                if m:
                    rows.append((float(m.group(1)), re.sub(r"\s{2,}", "  ", m.group(2))))
            return rows
        comms = report("--sort", "comm")
        syms = report("--comm", "kiln-api", "--percentage", "relative", "--sort", "dso,sym")
        kernel = sum(share for share, sym in syms if "[k]" in sym)
        libs = {}
        for share, sym in syms:
            if "[k]" not in sym:
                dso = sym.split()[0]
                libs[dso] = libs.get(dso, 0) + share
        return {"comms": comms[:8], "kiln_api_kernel": kernel, "kiln_api_libs": libs,
                "kiln_api": syms[:12]}
    finally:
        if w.poll() is None:
            w.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_api(stk):
    app = stk.new_app()
    run = stk.submit_run(app, "default")
    stk.wait_runs([run], 60)
    path = "/admin/apps/%d/coding-agent/runs/%d" % (app, run)
    st, raw, _ = stk.request("GET", path)
    assert st == 200, raw
    kiln_url = "http://127.0.0.1:%d%s" % (stk.port, path)
    bare = BareBaseline(stk)
    try:
        bare.start()
        bare_url = "http://127.0.0.1:%d%s" % (bare.port, path)
        mariadb = int(open(os.path.join(stk.state, "run", "mariadb.pid")).read())
        kiln_tree = {"nginx": int(open(os.path.join(stk.state, "run", "nginx.pid")).read()),
                     "responder": stk.api_master(), "mariadbd": mariadb}
        bare_tree = {"nginx": int(open(os.path.join(bare.dir, "nginx.pid")).read()),
                     "responder": bare.fcgi.pid, "mariadbd": mariadb}
        # Kiln and the baseline take turns, API_ROUNDS times each: a
        # neighbour's load on a shared machine then weighs on both alike.
        k_rounds, b_rounds, stmts = [], [], {k: 0 for k in STATUS_KEYS}
        for rnd in range(API_ROUNDS):
            log("api: round %d of %d: wrk -c 32 against kiln, then the bare responder" % (rnd + 1, API_ROUNDS))
            s0 = status(stk)
            k_rounds.append(wrk_accounted(kiln_url, stk.token, 32, 2, API_ROUND_SECS, kiln_tree))
            d = delta(s0, status(stk))
            stmts = {k: stmts[k] + d[k] for k in STATUS_KEYS}
            b_rounds.append(wrk_accounted(bare_url, stk.token, 32, 2, API_ROUND_SECS, bare_tree))
        k32, b32 = combine_rounds(k_rounds), combine_rounds(b_rounds)
        log("api: wrk -c 4 (one request per worker)")
        k4 = wrk(kiln_url, stk.token, 4, 2, 5)
        b4 = wrk(bare_url, stk.token, 4, 2, 5)
    finally:
        bare.stop()
    for name, r in (("kiln c32", k32), ("bare c32", b32), ("kiln c4", k4), ("bare c4", b4)):
        if r["non2xx"] or r["socket_errors"]:
            raise RuntimeError("%s: %d non-2xx, %s" % (name, r["non2xx"], r["socket_errors"]))
    log("api: perf profile")
    prof = perf_profile(kiln_url, stk.token)
    per_req = {k: stmts[k] / k32["requests"] for k in ("Com_stmt_execute", "Com_select", "Com_update")}
    return {"path": path, "workers": int(stk.cfg["workers"]), "kiln32": k32, "bare32": b32,
            "round_ratios": [kr["rps"] / br["rps"] for kr, br in zip(k_rounds, b_rounds)],
            "db_per_request": per_req,
            "kiln4": k4, "bare4": b4, "profile": prof,
            "max_requests_per_worker": int(stk.cfg["max_requests_per_worker"])}


# ---------------------------------------------------------------- database cost

STATUS_KEYS = ["Com_insert", "Com_update", "Com_delete", "Com_replace", "Com_insert_select",
               "Com_update_multi", "Com_delete_multi", "Com_commit", "Com_rollback", "Com_begin",
               "Com_select", "Com_stmt_execute", "Handler_write", "Handler_update", "Handler_delete",
               "Innodb_log_writes", "Innodb_data_fsyncs"]
WRITE_COMS = ["Com_insert", "Com_update", "Com_delete", "Com_replace", "Com_insert_select",
              "Com_update_multi", "Com_delete_multi"]


def status(stk):
    rows = stk.sql("SHOW GLOBAL STATUS WHERE Variable_name IN (%s)" %
                   ",".join("'%s'" % k for k in STATUS_KEYS))
    return {r[0]: int(r[1]) for r in rows}


def delta(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in STATUS_KEYS}


def statement_shape(sql):
    s = " ".join(sql.split())
    m = re.match(r"(?i)(INSERT INTO|UPDATE|DELETE FROM|REPLACE INTO)\s+`?(\w+)`?", s)
    if m:
        verb = m.group(1).upper().split()[0]
        extra = ""
        if verb == "UPDATE":
            sets = re.search(r"(?i)\bSET\s+(\w+)", s)
            extra = " SET %s..." % sets.group(1) if sets else ""
        return "%s %s%s" % (verb, m.group(2), extra)
    m = re.match(r"(?i)(COMMIT|START TRANSACTION|ROLLBACK)", s)
    return m.group(1).upper() if m else None


def bench_dbcost(stk):
    app = stk.new_app()
    glog = os.path.join(stk.state, "log", "general-bench.log")
    # Idle window first: what the stack writes with nothing to do.
    a = status(stk)
    time.sleep(3)
    b = status(stk)
    idle = delta(a, b)
    stk.sql("SET GLOBAL general_log_file = '%s'; SET GLOBAL log_output = 'FILE'; "
            "SET GLOBAL general_log = 1" % glog)
    try:
        before = status(stk)
        t = time.time()
        run = stk.submit_run(app, "long-answer")
        stk.wait_runs([run], 120)
        after = status(stk)
        secs = time.time() - t
    finally:
        stk.sql("SET GLOBAL general_log = 0")
    d = delta(before, after)
    shapes = {}
    with open(glog, errors="replace") as f:
        for line in f:
            m = re.match(r"^(?:\d{6}\s+[\d:]+)?\s+\d+\s+(Query|Execute)\s+(.*)$", line)
            if not m:
                continue
            shape = statement_shape(m.group(2))
            if shape and "general_log" not in m.group(2):
                shapes[shape] = shapes.get(shape, 0) + 1
    rows = stk.run_rows([run])[run]
    types = stk.sql("SELECT type, COUNT(*) FROM agent_run_events WHERE run_id = %d GROUP BY type" % run)
    msgs = stk.sql("SELECT COUNT(*) FROM agent_messages WHERE run_id = %d" % run)[0][0]
    usage = stk.sql("SELECT completion_tokens, steps FROM agent_runs WHERE id = %d" % run)[0]
    tools = stk.sql("SELECT COUNT(*) FROM agent_run_events WHERE run_id = %d AND type = 'tool.completed'" % run)[0][0]
    return {"run": run, "status": rows["status"], "seconds": secs, "delta": d, "idle": idle,
            "idle_seconds": 3, "writes": sum(d[k] for k in WRITE_COMS),
            "idle_writes": sum(idle[k] for k in WRITE_COMS), "shapes": shapes,
            "events": rows["count"], "event_types": {t[0]: int(t[1]) for t in types},
            "messages": int(msgs), "completion_tokens": int(usage[0]), "steps": int(usage[1]),
            "tool_calls": int(tools)}


# ---------------------------------------------------------------- checkpoints

WORDS = ("layout color palette navigation section typography hero footer form image script "
         "page visitors phone screen keyboard focus brand message fold network action markup "
         "content width reader order future edit hand build step calm light idea plan note "
         "share capture connect publish card grid flex margin padding border radius shadow").split()


def make_tree(root, rnd):
    """180 files, 1.2 MB: 160 text files (HTML, CSS, JS, JSON, Markdown) and
    20 incompressible binary files (images)."""
    kinds = [("pages", "html", 60), ("assets/css", "css", 30), ("assets/js", "js", 40),
             ("data", "json", 20), ("docs", "md", 10)]
    text_sizes = [rnd.randint(2000, 11000) for _ in range(160)]
    scale = 1000000 / sum(text_sizes)
    text_sizes = [int(s * scale) for s in text_sizes]
    bin_sizes = [rnd.randint(4000, 16000) for _ in range(20)]
    scale = 200000 / sum(bin_sizes)
    bin_sizes = [int(s * scale) for s in bin_sizes]
    paths = []
    i = 0
    for folder, ext, n in kinds:
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for k in range(n):
            p = "%s/%s-%03d.%s" % (folder, folder.split("/")[-1], k, ext)
            words = []
            size = 0
            while size < text_sizes[i]:
                w = rnd.choice(WORDS)
                words.append(w)
                size += len(w) + 1
                if rnd.random() < 0.08:
                    words.append("\n")
            with open(os.path.join(root, p), "w") as f:
                f.write(" ".join(words)[:text_sizes[i]])
            paths.append(p)
            i += 1
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    for k, size in enumerate(bin_sizes):
        with open(os.path.join(root, "img", "photo-%02d.png" % k), "wb") as f:
            f.write(rnd.randbytes(size))
    return paths


def tree_stats(root):
    n = total = 0
    for d, _, files in os.walk(root):
        for f in files:
            n += 1
            total += os.path.getsize(os.path.join(d, f))
    return n, total


def dir_bytes(root, skip=()):
    total = 0
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in skip]
        for f in files:
            total += os.path.getsize(os.path.join(d, f))
    return total


def hyperfine(commands, runs=15, prepare=None):
    """commands: [(name, shell command)]; prepare: {name: shell command}."""
    fd, out = tempfile.mkstemp(prefix="kiln-bench-hf.", suffix=".json")
    os.close(fd)
    cmd = ["hyperfine", "--warmup", "2", "--runs", str(runs), "--style", "none", "--export-json", out]
    for name, c in commands:
        if prepare and name in prepare:
            cmd += ["--prepare", prepare[name]]
        else:
            cmd += ["--prepare", "true"]
        cmd += ["--command-name", name, c]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError("hyperfine: %s" % (p.stderr or p.stdout))
        with open(out) as f:
            res = json.load(f)
    finally:
        os.unlink(out)
    return {r["command"]: {"mean_ms": r["mean"] * 1000, "stddev_ms": r["stddev"] * 1000,
                           "median_ms": r["median"] * 1000} for r in res["results"]}


def git(gitdir, worktree, *args):
    subprocess.run(["git", "--git-dir", gitdir, "--work-tree", worktree, "-c", "user.name=bench",
                    "-c", "user.email=bench@localhost", "-c", "gc.auto=0", *args],
                   check=True, capture_output=True, timeout=120)


def bench_checkpoints(stk):
    tool = os.path.join(stk.tools, "ckpt-bench")
    work = tempfile.mkdtemp(prefix="ckpt.", dir=stk.state)
    q = shlex.quote
    try:
        tree = os.path.join(work, "tree")
        rnd = random.Random(1)
        paths = make_tree(tree, rnd)
        nfiles, nbytes = tree_stats(tree)
        store = os.path.join(work, "store")
        tarf = os.path.join(work, "tree.tar")
        zstf = os.path.join(work, "tree.tar.zst")
        gitd = os.path.join(work, "shadow.git")
        xdir = os.path.join(work, "x")
        ws = os.path.join(work, "ws")

        def create(base=None):
            args = [tool, "create", store, tree] + (list(base) if base else [])
            p = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
            return json.loads(p.stdout)
        full = create()
        subprocess.run(["tar", "cf", tarf, "-C", tree, "."], check=True)
        git(gitd, tree, "init", "-q")
        git(gitd, tree, "add", "-A")
        git(gitd, tree, "commit", "-q", "-m", "base")
        gitcmd = "git --git-dir=%s --work-tree=%s -c user.name=b -c user.email=b@localhost" % (q(gitd), q(tree))
        log("checkpoints: create")
        create_t = hyperfine([
            ("kiln", "%s create %s %s" % (q(tool), q(store), q(tree))),
            ("tar", "tar cf %s -C %s ." % (q(tarf), q(tree))),
            ("tar+fsync", "tar cf %s -C %s . && sync %s %s" % (q(tarf), q(tree), q(tarf), q(work))),
            ("tar.zst", "tar --zstd -cf %s -C %s ." % (q(zstf), q(tree))),
            ("git", "%s add -A && %s commit -q --allow-empty -m c" % (gitcmd, gitcmd)),
        ], prepare={"kiln": "rm -rf %s" % q(store),
                    "git": "rm -rf %s && git init -q --bare %s" % (q(gitd), q(gitd))})
        # Incremental: one file changed since the base checkpoint.
        full = create()
        with open(os.path.join(tree, paths[7]), "a") as f:
            f.write("\none more line\n")
        incr_t = hyperfine([("kiln", "%s create %s %s %s %s" % (q(tool), q(store), q(tree),
                                                                 q(full["name"]), q(full["sha256"])))])
        incr = create((full["name"], full["sha256"]))
        log("checkpoints: restore")
        git(gitd, tree, "add", "-A")
        git(gitd, tree, "commit", "-q", "-m", "x")
        subprocess.run(["tar", "cf", tarf, "-C", tree, "."], check=True)
        restore_t = hyperfine([
            ("kiln", "%s restore %s %s %s %s" % (q(tool), q(store), q(incr["name"]), q(incr["sha256"]), q(ws))),
            ("tar", "tar xf %s -C %s" % (q(tarf), q(xdir))),
            ("tar+fsync", "tar xf %s -C %s && find %s -exec sync {} +" % (q(tarf), q(xdir), q(xdir))),
            ("git", "git --git-dir=%s --work-tree=%s checkout -q -f HEAD -- ." % (q(gitd), q(xdir))),
        ], prepare={"tar": "rm -rf %s && mkdir %s" % (q(xdir), q(xdir)),
                    "tar+fsync": "rm -rf %s && mkdir %s" % (q(xdir), q(xdir)),
                    "git": "rm -rf %s && mkdir %s" % (q(xdir), q(xdir))})
        r = subprocess.run([tool, "restore", store, incr["name"], incr["sha256"], ws],
                           capture_output=True, text=True, check=True)
        restore_split = json.loads(r.stdout)
        if subprocess.run(["diff", "-r", "-q", tree, ws], capture_output=True).returncode != 0:
            raise RuntimeError("the restored tree differs from the original")

        log("checkpoints: 100 checkpoints of one changed file each")
        shutil.rmtree(store)
        shutil.rmtree(gitd)
        git(gitd, tree, "init", "-q")
        base = create()
        git(gitd, tree, "add", "-A")
        git(gitd, tree, "commit", "-q", "-m", "base")
        kiln_ms, zst_ms, git_ms, zst_total = [], [], [], 0
        for i in range(100):
            p = paths[(i * 37) % len(paths)]
            with open(os.path.join(tree, p), "a") as f:
                f.write("\n<!-- edit %d: %s -->\n" % (i, rnd.choice(WORDS)))
            info = create((base["name"], base["sha256"]))
            kiln_ms.append(info["manifest_ms"] + info["write_ms"])
            base = info
            t = time.perf_counter()
            tar = subprocess.Popen(["tar", "cf", "-", "-C", tree, "."], stdout=subprocess.PIPE)
            z = subprocess.run(["zstd", "-q", "-3", "-c"], stdin=tar.stdout, capture_output=True, check=True)
            tar.wait()
            zst_ms.append((time.perf_counter() - t) * 1000)
            zst_total += len(z.stdout)
            t = time.perf_counter()
            git(gitd, tree, "add", "-A")
            git(gitd, tree, "commit", "-q", "-m", "edit %d" % i)
            git_ms.append((time.perf_counter() - t) * 1000)
        kiln_store = dir_bytes(store, skip=("tmp",))
        git_loose = dir_bytes(gitd)
        git(gitd, tree, "gc", "-q")
        git_packed = dir_bytes(gitd)
        return {"files": nfiles, "bytes": nbytes, "full": full, "incr": incr,
                "create": create_t, "create_incr": incr_t["kiln"], "restore": restore_t,
                "restore_split": restore_split,
                "series": {"n": 100, "kiln_bytes": kiln_store, "zst_bytes": zst_total,
                           "git_loose_bytes": git_loose, "git_packed_bytes": git_packed,
                           "kiln_ms": statistics.mean(kiln_ms), "zst_ms": statistics.mean(zst_ms),
                           "git_ms": statistics.mean(git_ms)}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- runner

def bench_runner(stk):
    # Baseline: one run alone on the same stack.
    app = stk.new_app()
    one = stk.submit_run(app, "default")
    stk.wait_runs([one], 120)
    single = stk.run_rows([one])[one]
    single_s = (single["finished"] - single["created"]) / 1000
    log("runner: 50 concurrent runs")
    apps = [stk.new_app() for _ in range(50)]
    t = time.time()
    runs = [stk.submit_run(a, "default") for a in apps]
    submit_s = time.time() - t
    tf = os.path.join(stk.state, "runner-targets")
    write_targets(tf, zip(apps, runs))
    summary = sse_load(stk, tf, len(runs), 300)
    stk.wait_runs(runs, 120)
    problems, rows = check_streams(stk, summary)
    statuses = {}
    for r in rows.values():
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    if statuses.get("completed", 0) != len(runs):
        problems.append("statuses: %s" % statuses)
    first = min(r["created"] for r in rows.values())
    last = max(r["finished"] for r in rows.values())
    wall = (last - first) / 1000
    durations = [(r["finished"] - r["created"]) / 1000 for r in rows.values()]
    return {"runs": len(runs), "wall_s": wall, "runs_per_s": len(runs) / wall,
            "single_s": single_s, "single_runs_per_s": 1 / single_s, "submit_s": submit_s,
            "p50_run_s": pct(durations, 50), "max_run_s": max(durations),
            "events": summary["events"], "gaps": summary["gaps"], "dups": summary["dups"],
            "statuses": statuses, "problems": problems,
            "concurrency": int(stk.cfg["runner_max_concurrent"])}


# ---------------------------------------------------------------- streams

def bench_streams(stk, nstreams=1000, nruns=50):
    apps = [stk.new_app() for _ in range(nruns)]
    pool_before = stk.stream_processes()
    if not pool_before:
        raise RuntimeError("no stream process found under kiln-api's master")
    runs = [stk.submit_run(a, "slow") for a in apps]
    tf = os.path.join(stk.state, "stream-targets")
    write_targets(tf, zip(apps, runs))
    probe_app = apps[0]

    def probe():
        lat, statuses = [], []
        for i in range(20):
            path = ("/admin/apps/%d" % probe_app if i % 2 else
                    "/admin/apps/%d/coding-agent/runs/%d" % (probe_app, runs[0]))
            st, _, ms = stk.request("GET", path)
            statuses.append(st)
            lat.append(ms)
            time.sleep(0.1)
        return lat, statuses
    rest_ms, rest_status = probe()

    def while_open():
        samples = [stk.stream_processes()]
        lat, statuses = probe()
        samples.append(stk.stream_processes())
        return {"pool": samples, "api_ms": lat, "api_status": statuses}
    log("streams: opening %d streams on %d live runs" % (nstreams, nruns))
    summary = sse_load(stk, tf, nstreams, 120, on_open=while_open)
    stk.wait_runs(runs, 60)
    pool_after = stk.stream_processes()
    problems, _ = check_streams(stk, summary)
    during = summary["during"] or {"pool": [{}], "api_ms": [], "api_status": []}
    rss_before = sum(v[0] for v in pool_before.values())
    rss_during = max(sum(v[0] for v in s.values()) for s in during["pool"])
    threads_during = max(sum(v[1] for v in s.values()) for s in during["pool"])
    pids = [sorted(pool_before)] + [sorted(s) for s in during["pool"]] + [sorted(pool_after)]
    if any(p != pids[0] for p in pids):
        problems.append("stream processes changed: %s" % pids)
    if any(s != 200 for s in during["api_status"] + rest_status):
        problems.append("API answers: %s at rest, %s during the hold" % (rest_status, during["api_status"]))
    # The pool was found by its threads; its log lines name it too.
    with open(os.path.join(stk.state, "log", "kiln-api.log"), errors="replace") as f:
        logged = {int(m) for m in re.findall(r"kiln-stream\[(\d+)\]", f.read())}
    if not set(pids[0]) <= logged:
        problems.append("stream pids %s do not log as kiln-stream (%s)" % (pids[0], sorted(logged)))
    opened = summary["opened"] or 1
    return {"streams": nstreams, "runs": nruns, "opened": summary["opened"],
            "open_all_ms": summary["open_all_ms"], "events": summary["events"],
            "processes": len(pool_before), "pids": pids[0],
            "rss_before_kib": rss_before, "rss_during_kib": rss_during,
            "per_stream_kib": (rss_during - rss_before) / opened,
            "threads_before": sum(v[1] for v in pool_before.values()), "threads_during": threads_during,
            "api_ms": during["api_ms"], "api_rest_ms": rest_ms, "problems": problems,
            "stream_max_per_process": int(stk.cfg["stream_max_per_process"]),
            "stream_processes": int(stk.cfg["stream_processes"])}


# ---------------------------------------------------------------- event latency

def latency_run(stk, nruns):
    apps = [stk.new_app() for _ in range(nruns)]
    runs = [stk.submit_run(a, "slow") for a in apps]
    tf = os.path.join(stk.state, "latency-targets-%d" % nruns)
    write_targets(tf, zip(apps, runs))
    summary = sse_load(stk, tf, nruns, 120)
    stk.wait_runs(runs, 60)
    problems, rows = check_streams(stk, summary)
    # Peak number of runs running at the same time.
    edges = []
    for r in rows.values():
        if r["started"] and r["finished"]:
            edges += [(r["started"], 1), (r["finished"], -1)]
    peak = cur = 0
    for _, e in sorted(edges):
        cur += e
        peak = max(peak, cur)
    return {"runs": nruns, "peak_running": peak, "latency": summary["latency"],
            "events": summary["events"], "problems": problems}


def bench_latency(stk):
    log("latency: baseline, one active run")
    one = latency_run(stk, 1)
    log("latency: 100 active runs")
    many = latency_run(stk, 100)
    return {"one": one, "many": many, "poll_ms": int(stk.cfg["stream_poll_ms"]),
            "concurrency": int(stk.cfg["runner_max_concurrent"])}


# ---------------------------------------------------------------- the report

def fmt_ms(v):
    return "%.2f ms" % v if v < 10 else "%.1f ms" % v if v < 100 else "%.0f ms" % v


def fmt_bytes(n):
    return "%.1f KiB" % (n / 1024) if n < 1048576 else "%.2f MiB" % (n / 1048576)


def met(ok):
    return "yes" if ok else "**no**"


def _render_api(a, api):
    """The API section."""
    k, b, k4, b4 = api["kiln32"], api["bare32"], api["kiln4"], api["bare4"]
    a("## API: `GET /admin/apps/{id}/coding-agent/runs/{run_id}`")
    a("")
    a("wrk (`-t 2 --latency`, the same Authorization header on both) against Kiln")
    a("(nginx -> kiln-api, %d pre-forked workers: token check + one row) and against the" % api["workers"])
    a("baseline: tools/bench/bare-fcgi.c, a libfcgi responder pre-forked to the same %d" % api["workers"])
    a("workers that answers a fixed run-sized JSON body, behind a second nginx rendered from")
    a("the stack's own config (same top-level and server block; only its socket and port differ).")
    if api.get("round_ratios"):
        a("At -c 32 the two take turns, %d rounds of %d s each, so that other load on the" % (
            len(api["round_ratios"]), API_ROUND_SECS))
        a("machine weighs on both alike: requests/s is the mean of the rounds, each percentile")
        a("the median of the rounds'. Kiln's ratio in each round: %s." % ", ".join(
            "%.2f" % x for x in api["round_ratios"]))
    a("The baseline is stock libfcgi throughout, its lingering close included (shutdown,")
    a("then wait for nginx to close first); Kiln skips that wait once it has read a request's")
    a("stdin to its end (src/cmd/kiln-api.c), which is its own work, not the library's.")
    a("")
    a("| | requests/s | p50 | p75 | p90 | p99 |")
    a("|---|---|---|---|---|---|")
    for name, r in (("Kiln, -c 32", k), ("bare, -c 32", b), ("Kiln, -c 4", k4), ("bare, -c 4", b4)):
        a("| %s | %.0f | %s | %s | %s | %s |" % (name, r["rps"], fmt_ms(r["p50"]), fmt_ms(r["p75"]),
                                                fmt_ms(r["p90"]), fmt_ms(r["p99"])))
    a("")
    dbr = api["db_per_request"]
    by_comm = {c: v for v, c in (api.get("profile") or {}).get("comms", [])}
    a("Each Kiln request made %.2f database statements (%.2f SELECTs, %.3f UPDATEs: the" % (
        dbr["Com_stmt_execute"], dbr["Com_select"], dbr["Com_update"]))
    a("token's last_used_at, at most once a minute) over MariaDB's unix socket; the bare")
    a("responder makes none, which is most of the gap%s." % (
        ": in the profile below mariadbd takes %.0f%% of all CPU samples, kiln-api %.0f%% and nginx %.0f%%"
        % (by_comm.get("mariadbd", 0), by_comm.get("kiln-api", 0), by_comm.get("nginx", 0)) if by_comm else ""))
    a("")
    kc, bc = k.get("cpu_us"), b.get("cpu_us")
    if kc and bc:
        a("CPU per request during the -c 32 runs (utime + stime of each process tree, read")
        a("from /proc before and after; both runs saturate the machine's cores):")
        a("")
        a("| microseconds per request | Kiln | bare |")
        a("|---|---|---|")
        total_k = total_b = 0
        for name, label in (("nginx", "nginx"), ("responder", "kiln-api / bare-fcgi"),
                            ("mariadbd", "mariadbd"), ("wrk", "wrk")):
            total_k += kc[name]
            total_b += bc[name]
            a("| %s | %.0f | %.0f |" % (label, kc[name], bc[name]))
        a("| all | %.0f | %.0f |" % (total_k, total_b))
        a("")
        ceiling = total_b / (total_b + kc["mariadbd"])
        a("MariaDB alone costs %.0f us per request here, %.0f%% of all the CPU a Kiln request" % (
            kc["mariadbd"], 100 * kc["mariadbd"] / total_k))
        a("takes. A Kiln whose own process cost no more than the bare responder's (%.0f us) would" % bc["responder"])
        a("still reach only %.2f of the bare responder's requests/s on this machine: that is the" % ceiling)
        a("ceiling of any responder that reads one row per request; Kiln reaches %.2f of it." % (
            k["rps"] / b["rps"] / ceiling))
        a("")
    mean32 = 32 / k["rps"] * 1000
    a("With 32 connections and %d workers, %d requests wait in nginx's queue at any time:" % (
        api["workers"], 32 - api["workers"]))
    a("by Little's law the mean latency is 32 / %.0f req/s = %.1f ms for Kiln (%.1f ms for" % (k["rps"], mean32, 32 / b["rps"] * 1000))
    a("the bare responder, whose p99 is %s), so a p99 under 5 ms at -c 32 needs a mean well" % fmt_ms(b["p99"]))
    a("under 5 ms, that is well over 32 / 5 ms = 6,400 requests/s on this machine; the latency")
    a("of one request, without the queue, is the -c 4 row.")
    if api["kiln32"]["requests"] > api["workers"] * api["max_requests_per_worker"]:
        a("Each worker is replaced after max_requests_per_worker = %d requests, so the -c 32" % api["max_requests_per_worker"])
        a("run includes worker respawns (fork, database connect).")
    prof = api.get("profile")
    if prof:
        a("")
        a("Where the CPU goes (perf record -a during a separate wrk -c 32 run; share of all samples")
        a("on the machine, so processes of other work on it show up too):")
        a("")
        a("| process | share |")
        a("|---|---|")
        for share, comm in prof["comms"]:
            a("| %s | %.1f%% |" % (comm, share))
        a("")
        a("%.0f%% of kiln-api's samples are in the kernel: the system calls of the FastCGI" % prof["kiln_api_kernel"])
        a("exchange with nginx and of the MariaDB round trips, poll() and the wake-ups between")
        a("processes (sampled kernel time tends to land where interrupts are enabled again, hence")
        a("`_raw_spin_unlock_irqrestore`). In user space: %s." % ", ".join(
            "%s %.1f%%" % kv for kv in sorted(prof["kiln_api_libs"].items(), key=lambda kv: -kv[1])[:6]))
        a("Hottest symbols (share of kiln-api's samples):")
        a("")
        a("| share | dso / symbol |")
        a("|---|---|")
        for share, sym in prof["kiln_api"]:
            a("| %.1f%% | `%s` |" % (share, sym.replace("|", "/")))
    a("")


def _render_streams(a, st):
    """The streams section."""
    a("## Streams: %d concurrent SSE streams" % st["streams"])
    a("")
    a("tools/bench/sse-load.c (one process, epoll, non-blocking sockets) opens %d streams" % st["streams"])
    a("through nginx, %d per run, on %d runs of the `slow` script (about 10 s of events each)," % (st["streams"] // st["runs"], st["runs"]))
    a("and checks every event: ids gapless and in order, ending with the terminal event, and")
    a("per run equal to the database's event log. While all are open it samples the stream")
    a("pool (kiln-api master's children that run threads) and makes 20 API requests.")
    a("")
    a("| | |")
    a("|---|---|")
    a("| streams opened | %d (all open after %d ms) |" % (st["opened"], st["open_all_ms"]))
    a("| events received | %d |" % st["events"])
    a("| stream processes | %d (pids %s), the same before, during and after |" % (st["processes"], st["pids"]))
    a("| threads in the pool | %d at rest, %d with the streams open |" % (st["threads_before"], st["threads_during"]))
    a("| pool RSS | %s at rest, %s with the streams open |" % (fmt_bytes(st["rss_before_kib"] * 1024), fmt_bytes(st["rss_during_kib"] * 1024)))
    a("| RSS per open stream | %.1f KiB (includes the runs' shared event frames) |" % st["per_stream_kib"])
    if st["api_ms"]:
        a("| API requests during the hold | %d, p50 %s, max %s (before the streams: p50 %s, max %s) |" % (
            len(st["api_ms"]), fmt_ms(pct(st["api_ms"], 50)), fmt_ms(max(st["api_ms"])),
            fmt_ms(pct(st["api_rest_ms"], 50)), fmt_ms(max(st["api_rest_ms"]))))
    a("| checks | %s |" % ("all passed" if not st["problems"] else "; ".join(st["problems"])))
    a("")
    a("Capacity: stream_processes = %d x stream_max_per_process = %d streams per host; each" % (st["stream_processes"], st["stream_max_per_process"]))
    a("stream takes two nginx connections (client, upstream; worker_connections 4096 per")
    a("worker) and one file descriptor in the stream process (open files limit above).")
    a("")


def _render_latency(a, lat):
    """The event latency section."""
    o, mny = lat["one"], lat["many"]
    a("## Event latency")
    a("")
    a("Time from a runner's append of an event (the row's created_at, DATETIME(3) UTC, set by")
    a("the INSERT inside the append transaction) to its arrival at an SSE client on the same")
    a("host (sse-load reads the envelope's `ts`). Real runners: the bench stack runs 2")
    a("kiln-runner processes with runner_max_concurrent = %d, and %d runs of the `slow` script" % (lat["concurrency"], mny["runs"]))
    a("on %d apps, one stream each. Only events created after their stream opened count. ts" % mny["runs"])
    a("has millisecond resolution (truncated), so samples read up to 1 ms high. The stream")
    a("pool polls the database every stream_poll_ms = %d ms." % lat["poll_ms"])
    a("")
    a("| | runs running at once (peak) | samples | p50 | p90 | p99 | max |")
    a("|---|---|---|---|---|---|---|")
    for name, r in (("baseline: 1 run", o), ("%d runs" % mny["runs"], mny)):
        x = r["latency"]
        a("| %s | %d | %d | %d ms | %d ms | %d ms | %d ms |" % (name, r["peak_running"], x["samples"], x["p50_ms"], x["p90_ms"], x["p99_ms"], x["max_ms"]))
    probs = o["problems"] + mny["problems"]
    a("")
    a("Checks (every stream got every event, in order): %s." % ("passed" if not probs else "; ".join(probs)))
    a("")


def _render_dbcost(a, db):
    """The database cost section."""
    a("## Database cost of one run")
    a("")
    a("One run of the `long-answer` script (a ~2,000-token streamed answer, %d tool calls in" % db["tool_calls"])
    a("%d model steps, %d completion tokens) on an otherwise idle stack: MariaDB's global" % (db["steps"], db["completion_tokens"]))
    a("counters (SHOW GLOBAL STATUS) from before the POST to the run's end (%.1f s); the" % db["seconds"])
    a("statement breakdown comes from the general query log of the same window. Baseline: an")
    a("idle window of %d s just before wrote %d statements." % (db["idle_seconds"], db["idle_writes"]))
    a("")
    d = db["delta"]
    a("| counter | run | idle %d s |" % db["idle_seconds"])
    a("|---|---|---|")
    for key in STATUS_KEYS:
        a("| %s | %d | %d |" % (key, d[key], db["idle"][key]))
    a("")
    a("Write statements by shape (general log):")
    a("")
    a("| statement | count |")
    a("|---|---|")
    for shape, n in sorted(db["shapes"].items(), key=lambda kv: -kv[1]):
        a("| `%s` | %d |" % (shape, n))
    a("")
    a("Events written: %d (%s); conversation messages: %d." % (
        db["events"], ", ".join("%s %d" % kv for kv in sorted(db["event_types"].items())), db["messages"]))
    a("")
    sh = db["shapes"]
    ev = sh.get("INSERT agent_run_events", 0)
    if db["writes"] > 100:
        a("The target (at most 100) is missed by %d. Where the writes go: the event log takes %d" % (db["writes"] - 100, ev))
        a("(one INSERT per append),")
        a("the conversation %d (one INSERT per message), the usage counters %d (one UPDATE per" % (
            sh.get("INSERT agent_messages", 0), sh.get("UPDATE agent_runs SET prompt_tokens...", 0)))
        a("model step), and the rest is the run's lifecycle and its checkpoints. Writing a step's")
        a("messages in one multi-row INSERT, and its usage with the step's last event append,")
        a("would bring this run to %d." % (
            db["writes"] - (sh.get("INSERT agent_messages", 0) - db["steps"] - 1)
            - sh.get("UPDATE agent_runs SET prompt_tokens...", 0)))
        a("")


def _render_checkpoints(a, ck):
    """The checkpoints section."""
    c, r, s = ck["create"], ck["restore"], ck["series"]
    a("## Checkpoints")
    a("")
    a("A generated app tree of %d files, %.2f MB (160 text files: HTML, CSS, JS, JSON," % (ck["files"], ck["bytes"] / 1e6))
    a("Markdown; 20 incompressible images). Kiln's side is tools/bench/ckpt-bench.c, linked")
    a("with libkiln.a: create = manifest_build (hash every file) + ckpt_write (tar.zst, fsynced);")
    a("restore = ckpt_extract (verified, fsynced) + ckpt_swap_into. hyperfine, 2 warm-ups,")
    a("15 runs. Plain tar and git do not fsync; Kiln does (the archive on")
    a("create, every file and folder on restore), so the summary compares with tar followed")
    a("by the same fsyncs (coreutils sync FILE...).")
    a("")
    a("| create | median | mean | stddev |")
    a("|---|---|---|---|")
    for name, label in (("kiln", "Kiln checkpoint (full)"), ("tar", "tar cf"),
                        ("tar+fsync", "tar cf, then fsync of the archive and its folder"),
                        ("tar.zst", "tar --zstd -cf"), ("git", "git add -A && git commit (fresh repository)")):
        a("| %s | %s | %s | %s |" % (label, fmt_ms(c[name]["median_ms"]), fmt_ms(c[name]["mean_ms"]), fmt_ms(c[name]["stddev_ms"])))
    ci = ck["create_incr"]
    a("| Kiln checkpoint, one file changed since the base | %s | %s | %s |" % (fmt_ms(ci["median_ms"]), fmt_ms(ci["mean_ms"]), fmt_ms(ci["stddev_ms"])))
    a("")
    a("| restore | median | mean | stddev |")
    a("|---|---|---|---|")
    for name, label in (("kiln", "Kiln restore (extract + swap)"), ("tar", "tar xf"),
                        ("tar+fsync", "tar xf, then fsync of every file and folder"),
                        ("git", "git checkout -f HEAD -- . (empty worktree)")):
        a("| %s | %s | %s | %s |" % (label, fmt_ms(r[name]["median_ms"]), fmt_ms(r[name]["mean_ms"]), fmt_ms(r[name]["stddev_ms"])))
    a("")
    a("One Kiln create, split: manifest walk (SHA-256 of every file) %d ms, archive write %d ms;" % (
        ck["full"]["manifest_ms"], ck["full"]["write_ms"]))
    a("one restore: extract %d ms, swap (including removal of the old tree) %d ms. Archive" % (
        ck["restore_split"]["extract_ms"], ck["restore_split"]["swap_ms"]))
    a("sizes: full %s; one file changed %s (the changed file and the manifest; the rest" % (
        fmt_bytes(ck["full"]["size"]), fmt_bytes(ck["incr"]["size"])))
    a("is referenced in the base).")
    a("")
    a("Storage after %d checkpoints that each change one file (plus the first, full one):" % s["n"])
    a("")
    a("| | bytes | mean time per checkpoint |")
    a("|---|---|---|")
    a("| Kiln checkpoint store | %s | %s |" % (fmt_bytes(s["kiln_bytes"]), fmt_ms(s["kiln_ms"])))
    a("| %d full archives, tar + zstd -3 | %s | %s |" % (s["n"], fmt_bytes(s["zst_bytes"]), fmt_ms(s["zst_ms"])))
    a("| shadow git repository, loose objects | %s | %s |" % (fmt_bytes(s["git_loose_bytes"]), fmt_ms(s["git_ms"])))
    a("| shadow git repository after git gc | %s | |" % fmt_bytes(s["git_packed_bytes"]))
    a("")


def _render_runner(a, rn):
    """The runner section."""
    a("## Runner")
    a("")
    a("%d apps, one run each of the `default` script (three files written, a checkpoint)," % rn["runs"])
    a("submitted at once (%.1f s to submit all), with one SSE stream per run checking every event." % rn["submit_s"])
    a("2 runners, runner_max_concurrent = %d. runs/s = runs / (last finished_at - first" % rn["concurrency"])
    a("created_at); baseline: the same script's one run alone on the same stack.")
    a("")
    a("| | |")
    a("|---|---|")
    a("| wall time | %.1f s |" % rn["wall_s"])
    a("| runs/s | %.2f (one run alone: %.2f s, %.2f runs/s) |" % (rn["runs_per_s"], rn["single_s"], rn["single_runs_per_s"]))
    a("| run duration p50 / max | %.1f s / %.1f s |" % (rn["p50_run_s"], rn["max_run_s"]))
    a("| statuses | %s |" % ", ".join("%s %d" % kv for kv in sorted(rn["statuses"].items())))
    a("| events streamed | %d, gaps %d, duplicates %d |" % (rn["events"], rn["gaps"], rn["dups"]))
    a("| checks | %s |" % ("all passed" if not rn["problems"] else "; ".join(rn["problems"])))
    a("")


def _render_summary(a, res):
    """One row per figure: Kiln, its baseline, the ratio, the target."""
    a("## Summary")
    a("")
    a("| benchmark | Kiln | baseline (same run) | ratio | target | met |")
    a("|---|---|---|---|---|---|")
    api = res.get("api")
    if isinstance(api, dict):
        k, b = api["kiln32"], api["bare32"]
        why_rps = why_p99 = ""
        kc, bc = k.get("cpu_us"), b.get("cpu_us")
        if kc and bc and k["rps"] / b["rps"] < 0.5:
            total_b = sum(bc.values())
            why_rps = " (MariaDB's %.0f us per row caps any one-row responder at %.2f here; see API)" % (
                kc["mariadbd"], total_b / (total_b + kc["mariadbd"]))
        if k["p99"] >= 5:
            why_p99 = " (%d requests queue for %d workers: the mean alone is 32 / rps = %.1f ms; see API)" % (
                32 - api["workers"], api["workers"], 32 / k["rps"] * 1000)
        a("| API `GET .../runs/{id}`, requests/s (wrk -c 32) | %.0f | %.0f (bare libfcgi) | %.2f | >= 0.5 | %s%s |" %
          (k["rps"], b["rps"], k["rps"] / b["rps"], met(k["rps"] / b["rps"] >= 0.5), why_rps))
        a("| API p99 latency (wrk -c 32) | %s | %s | %.2f | < 5 ms | %s%s |" %
          (fmt_ms(k["p99"]), fmt_ms(b["p99"]), k["p99"] / b["p99"], met(k["p99"] < 5), why_p99))
        k4, b4 = api["kiln4"], api["bare4"]
        a("| API p99 latency (wrk -c 4, one per worker) | %s | %s | %.2f | (< 5 ms) | %s |" %
          (fmt_ms(k4["p99"]), fmt_ms(b4["p99"]), k4["p99"] / b4["p99"], met(k4["p99"] < 5)))
    st = res.get("streams")
    if isinstance(st, dict):
        a("| SSE streams held open at once, all events checked | %d | - | - | >= 1000 | %s |" %
          (st["opened"], met(st["opened"] >= 1000 and not st["problems"])))
        a("| processes holding them | %d | %d (a process per stream) | %.3f | - | - |" %
          (st["processes"], st["opened"], st["processes"] / max(st["opened"], 1)))
        a("| stream pool memory per open stream | %.1f KiB | pool at rest: %s | %.2fx of the pool at rest | < 64 KiB | %s |" %
          (st["per_stream_kib"], fmt_bytes(st["rss_before_kib"] * 1024),
           st["rss_during_kib"] / max(st["rss_before_kib"], 1), met(st["per_stream_kib"] < 64)))
        if st["api_ms"]:
            a("| API latency while %d streams are open, p50 / max of %d | %s / %s | %s / %s (no stream open) | %.2f / %.2f | answers | %s |" %
              (st["opened"], len(st["api_ms"]), fmt_ms(pct(st["api_ms"], 50)), fmt_ms(max(st["api_ms"])),
               fmt_ms(pct(st["api_rest_ms"], 50)), fmt_ms(max(st["api_rest_ms"])),
               pct(st["api_ms"], 50) / pct(st["api_rest_ms"], 50), max(st["api_ms"]) / max(st["api_rest_ms"]),
               met(not st["problems"])))
    lat = res.get("latency")
    if isinstance(lat, dict):
        o, mny = lat["one"]["latency"], lat["many"]["latency"]
        a("| event latency p50, %d active runs | %d ms | %d ms (1 active run) | %.2f | <= 10 ms | %s |" %
          (lat["many"]["peak_running"], mny["p50_ms"], o["p50_ms"], mny["p50_ms"] / max(o["p50_ms"], 1),
           met(mny["p50_ms"] <= 10)))
        a("| event latency p99, %d active runs | %d ms | %d ms (1 active run) | %.2f | <= 50 ms | %s |" %
          (lat["many"]["peak_running"], mny["p99_ms"], o["p99_ms"], mny["p99_ms"] / max(o["p99_ms"], 1),
           met(mny["p99_ms"] <= 50)))
    db = res.get("dbcost")
    if isinstance(db, dict):
        a("| database writes per long-answer run | %d statements | %d events | %.2f per event | <= 100 | %s |" %
          (db["writes"], db["events"], db["writes"] / max(db["events"], 1), met(db["writes"] <= 100)))
    ck = res.get("checkpoints")
    if isinstance(ck, dict):
        c = ck["create"]
        r = ck["restore"]
        s = ck["series"]
        a("| checkpoint create (median), %d files / %.2f MB | %s | tar cf + fsync %s; git add+commit %s | %.1fx tar; %.2fx git | - | - |" %
          (ck["files"], ck["bytes"] / 1e6, fmt_ms(c["kiln"]["median_ms"]), fmt_ms(c["tar+fsync"]["median_ms"]),
           fmt_ms(c["git"]["median_ms"]), c["kiln"]["median_ms"] / c["tar+fsync"]["median_ms"],
           c["kiln"]["median_ms"] / c["git"]["median_ms"]))
        a("| checkpoint restore (median) | %s | tar xf + fsync %s; git checkout %s | %.1fx tar; %.2fx git | - | - |" %
          (fmt_ms(r["kiln"]["median_ms"]), fmt_ms(r["tar+fsync"]["median_ms"]), fmt_ms(r["git"]["median_ms"]),
           r["kiln"]["median_ms"] / r["tar+fsync"]["median_ms"], r["kiln"]["median_ms"] / r["git"]["median_ms"]))
        a("| storage, 100 checkpoints of one changed file each | %s | 100 tar.zst %s; git %s (packed) | %.3f of tar.zst; %.2fx git | - | - |" %
          (fmt_bytes(s["kiln_bytes"]), fmt_bytes(s["zst_bytes"]), fmt_bytes(s["git_packed_bytes"]),
           s["kiln_bytes"] / s["zst_bytes"], s["kiln_bytes"] / s["git_packed_bytes"]))
    rn = res.get("runner")
    if isinstance(rn, dict):
        a("| runner: %d concurrent runs (default script), runs/s | %.2f | %.2f (one run alone) | %.1fx | no lost or duplicated event | %s |" %
          (rn["runs"], rn["runs_per_s"], rn["single_runs_per_s"], rn["runs_per_s"] / rn["single_runs_per_s"],
           met(not rn["problems"])))
    for name in ("api", "streams", "latency", "dbcost", "checkpoints", "runner"):
        if isinstance(res.get(name), str):
            a("| %s | **failed**: %s | | | | |" % (name, res[name].splitlines()[-1][:200]))
    a("")



def render(m, res, elapsed):
    L = []
    a = L.append
    a("# Kiln performance")
    a("")
    a("Written by `make bench` (tools/bench/run-bench, which starts its own private stack and")
    a("stops it afterwards); do not edit by hand. Every figure is measured next to a baseline")
    a("taken in the same run on the same machine, and given as a ratio to it. A figure that")
    a("misses its target says so, with the reason. The bench stack runs the product's defaults")
    a("except runner_max_concurrent = 50 (2 runners), so that 100 runs can be active at once.")
    a("")
    a("## Machine")
    a("")
    a("| | |")
    a("|---|---|")
    a("| date | %s |" % m["date"])
    a("| CPU | %s, %s cores (nproc) |" % (m["cpu"], m["nproc"]))
    a("| memory | %s |" % m["memory"])
    a("| kernel | Linux %s |" % m["kernel"])
    a("| load average before the run | %s (other work on the machine skews every figure; the baselines share it) |" % m["load_before"])
    a("| software | %s; %s; %s |" % (m["mariadb"], m["nginx"], m["wrk"]))
    a("| open files limit | %s |" % m["nofile"])
    a("| duration of `make bench` | %.0f s (tool build and stack start included) |" % elapsed)
    a("")
    _render_summary(a, res)
    for name, section in (("api", _render_api), ("streams", _render_streams), ("latency", _render_latency),
                          ("dbcost", _render_dbcost), ("checkpoints", _render_checkpoints),
                          ("runner", _render_runner)):
        if isinstance(res.get(name), dict):
            section(a, res[name])
    failed = [k for k, v in res.items() if isinstance(v, str)]
    if failed:
        a("## Failures")
        a("")
        for k in failed:
            a("### %s" % k)
            a("")
            a("```")
            a(res[k].rstrip())
            a("```")
            a("")
    return "\n".join(L) + "\n"


BENCHES = [("api", bench_api), ("dbcost", bench_dbcost), ("checkpoints", bench_checkpoints),
           ("runner", bench_runner), ("streams", bench_streams), ("latency", bench_latency)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True)
    ap.add_argument("--tools", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    only = [x for x in args.only.split(",") if x]
    m = machine()
    stk = Stack(args.state, args.tools)
    res = {}
    for name, fn in BENCHES:
        if only and name not in only:
            continue
        log("%s: start" % name)
        try:
            res[name] = fn(stk)
        except Exception:
            res[name] = traceback.format_exc()
            log("%s: FAILED\n%s" % (name, res[name]))
    elapsed = time.time() - float(os.environ.get("KILN_BENCH_STARTED", T0))
    doc = render(m, res, elapsed)
    with open(args.out, "w") as f:
        f.write(doc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": m, "results": res}, f, indent=1, default=str)
    sys.stdout.write(doc)
    return 1 if any(isinstance(v, str) for v in res.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
