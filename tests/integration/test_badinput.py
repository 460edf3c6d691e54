"""The bad-input matrix: every route of src/router.c's table, the stream
route, and every location of nginx/kiln.conf that serves outside requests
(builder page, draft previews, published sites), each given every kind of
bad input that applies to it.

Every answer must be a 4xx with Kiln's JSON error shape
{"error":{"code":..,"message":..}} (the status and code the API documents
where the case has one), never a 5xx, a dropped connection or a hang; no
API worker may die; and the service state must be the same afterwards: the
row count of every Kiln table, the checksum of every table but api_tokens
(whose last_used_at moves with each request), the fixture app's row, and
the files under the state folder's workspaces/, checkpoints/, published/
and builds/.

The routes are read from the sources, so a new route or location cannot be
forgotten: ROUTE_INPUTS must name exactly the router's routes, and every
location of kiln.conf must be covered here or be internal."""

import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import subprocess

from kiln_test import ENV, eventually, new_org, request
from test_faults import app_with_two_uploads

ODD_METHODS = ("TRACE", "PROPFIND", "OPTIONS")
OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Each malformed id must read as "no such route" or "no such object".
BAD_IDS = ("0", "-1", "99999999999999999999", "abc", "1.5", "0001", "%20")
MISSING_ID = "99999999999"  # well formed, never issued
NGINX_LIMIT = 20000  # past large_client_header_buffers (16k): nginx refuses
KILN_LONG = 12000  # under nginx's limit: reaches Kiln
HUGE = 9 << 20  # past max_body_bytes (8 MiB by default)
TIMEOUT = 30  # seconds: an answer later than this is a hang
PARALLEL = 4

PAGE = {"limit": ("0", "101", "-1", "abc", "1e3", ""), "cursor": ("zz", "-5", "0")}

# What each route reads besides its path. "body": field -> (type, required);
# "valid": a body every case starts from, which the cases change in one
# place only; "empty_ok": an empty body is a valid request (so it is never
# sent). A route added to src/router.c must be added here.
ROUTE_INPUTS = {
    "health": {},
    # nginx answers 404 for it from outside; its one caller is nginx's
    # auth_request for /preview/ (location_cases)
    "preview_auth": {"outside": False},
    "apps_list": {"query": PAGE},
    "apps_create": {"body": {"name": ("string", True), "slug": ("string", True)},
                    "valid": {"name": "Never made", "slug": "never-made"}},
    "app_get": {},
    "app_update": {"body": {"name": ("string", True)}, "valid": {"name": "Never renamed"}},
    "app_delete": {},
    "revisions_list": {"query": PAGE},
    "revisions_create": {"body": {"files": ("files", True), "replace": ("bool", False)},
                         "valid": {"files": {"never.html": "never uploaded"}, "replace": False}},
    "revision_get": {},
    "revision_file": {},
    "publish": {"body": {"revision_id": ("int", False)}, "valid": {}, "empty_ok": True},
    "publishes_list": {"query": PAGE},
    "preview_url": {},
    "runs_list": {"query": PAGE},
    "runs_create": {"body": {"input": ("string", True), "client_request_id": ("string", False)},
                    "valid": {"input": "never run", "client_request_id": "never"}},
    "run_get": {},
    "run_cancel": {"body": {"mode": ("string", False)}, "valid": {"mode": "keep"}, "empty_ok": True},
    "run_events": {"query": {"after": ("-1", "abc", "2147483648", ""),
                             "limit": ("0", "1001", "abc", "")}},
    "checkpoints_list": {"query": PAGE},
    "checkpoint_get": {},
    "checkpoint_file": {},
    "checkpoint_restore": {"body": {"dry_run": ("bool", False), "expected_revision_id": ("int", False)},
                           "valid": {"dry_run": True}, "empty_ok": True},
    "checkpoint_revert_file": {"body": {"path": ("string", True), "expected_revision_id": ("int", False)},
                               "valid": {"path": "index.html"}},
    "checkpoint_diff": {},
}

# One value of each JSON type; a field gets every one that is not its type.
TYPED_VALUES = {"string": "text", "int": 7, "float": 1.5, "bool": True, "array": [1, "a"],
                "object": {"a": 1}, "null": None}
ACCEPTS = {"string": ("string",), "int": ("int",), "bool": ("bool",), "files": ("object",)}


# ---------------------------------------------------------------- sources

def _root(*parts):
    return os.path.join(ENV["ROOT"], *parts)


def router_routes():
    """[(method, pattern, name, public)] from src/router.c's route table."""
    src = open(_root("src", "router.c")).read()
    macros = dict(re.findall(r'#define\s+(\w+)\s+"([^"]*)"', src))
    table = src[src.index("routes[] = {"):]
    table = table[:table.index("\n};")]
    routes = []
    for m in re.finditer(r'\{\s*"([A-Z]+)",\s*((?:\w+\s+)?"[^"]*"),\s*\w+,\s*([01]),\s*"(\w+)"\s*\}', table):
        parts = re.findall(r'(\w+)|"([^"]*)"', m.group(2))
        pattern = "".join(macros[ident] if ident else text for ident, text in parts)
        routes.append((m.group(1), pattern, m.group(4), m.group(3) == "1"))
    assert len(routes) == table.count('{ "'), "router.c's table has an entry this test cannot read"
    return routes


def nginx_locations():
    """{location spec: body} for every location block of nginx/kiln.conf."""
    text = open(_root("nginx", "kiln.conf")).read()
    out = {}
    for m in re.finditer(r"^\s*location\s+([^{]+?)\s*\{", text, re.M):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out[m.group(1)] = text[m.end():i - 1]
    return out


# ---------------------------------------------------------------- state

def _sql(statement):
    return subprocess.run(["mariadb", "--no-defaults", "-S", os.path.join(ENV["KILN_STATE"], "run", "mysql.sock"),
                           "-u", "root", "-N", "-B", "kiln", "-e", statement],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def _tree(top):
    """{relative path: (size, sha256)} of every file below top; folders too."""
    out = {}
    for d, dirs, files in os.walk(top):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), top) + "/"] = None
        for name in files:
            p = os.path.join(d, name)
            if os.path.islink(p):
                out[os.path.relpath(p, top)] = ("link", os.readlink(p))
                continue
            with open(p, "rb") as f:
                out[os.path.relpath(p, top)] = (os.path.getsize(p), hashlib.sha256(f.read()).hexdigest())
    return out


def snapshot(app_id):
    tables = _sql("SHOW TABLES").split()
    counts = _sql(" UNION ALL ".join("SELECT '%s', COUNT(*) FROM `%s`" % (t, t) for t in tables))
    sums = _sql("CHECKSUM TABLE %s" % ", ".join("`%s`" % t for t in tables if t != "api_tokens"))
    state = {"tables": tables, "counts": counts, "checksums": sums,
             "app": _sql("SELECT * FROM apps WHERE id = %d" % app_id)}
    for sub in ("workspaces", "checkpoints", "published", "builds"):
        state[sub] = _tree(os.path.join(ENV["KILN_STATE"], sub))
    return state


def api_worker_deaths():
    log = os.path.join(ENV["KILN_STATE"], "log", "kiln-api.log")
    with open(log, errors="replace") as f:
        return sum(1 for line in f if re.search(r"worker \d+ (killed by signal|exited with status)", line))


# ---------------------------------------------------------------- requests

class Case:
    """One bad request and what must come back: status None means any 4xx;
    code and field, when given, must match the error object."""

    def __init__(self, label, method, path, body=None, headers=None, status=None, code=None, field=None,
                 token=True, allow_ok=False):
        self.label, self.method, self.path, self.body = label, method, path, body
        self.headers, self.status, self.code, self.field = dict(headers or {}), status, code, field
        self.token, self.allow_ok = token, allow_ok


def send(case, token):
    conn = http.client.HTTPConnection(ENV["host"], ENV["port"], timeout=TIMEOUT)
    headers = dict(case.headers)
    if case.token and token:
        headers.setdefault("Authorization", "Bearer " + token)
    try:
        # putrequest sends the path exactly as given: no quoting, no normalising
        conn.putrequest(case.method, case.path, skip_accept_encoding=True)
        body = case.body if case.body is not None else b""
        if case.body is not None or case.method in ("POST", "PUT", "PATCH"):
            headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read()
    except (OSError, http.client.HTTPException) as e:
        return None, "", repr(e).encode()
    finally:
        conn.close()


def judge(case, status, ctype, body):
    """None if the answer is right, else what is wrong with it."""
    if status is None:
        return "no answer (%s)" % body.decode(errors="replace")
    if case.allow_ok and 200 <= status < 300:
        return None
    if status >= 500:
        return "a %d" % status
    if not 400 <= status < 500:
        return "status %d, not a 4xx" % status
    if case.status is not None and status != case.status:
        return "status %d, want %d" % (status, case.status)
    if not ctype.startswith("application/json"):
        return "Content-Type %r, not JSON" % ctype
    try:
        err = json.loads(body.decode())["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        return "not the JSON error shape"
    if case.code and err["code"] != case.code:
        return "code %r, want %r" % (err["code"], case.code)
    if case.field and err.get("field") != case.field:
        return "field %r, want %r" % (err.get("field"), case.field)
    return None


def run_cases(cases, token):
    failures = []
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        for case, answer in zip(cases, pool.map(lambda c: send(c, token), cases)):
            wrong = judge(case, *answer)
            if wrong:
                failures.append("%s %s [%s]: %s: %r" % (case.method, case.path[:120], case.label, wrong,
                                                          answer[2][:200]))
    return failures


# ---------------------------------------------------------------- the fixture

def make_fixture():
    """One organization and app with two uploads, a finished run, a publish
    and a preview URL; returns the ids every route's path is built from."""
    slug, token = new_org()
    aid = app_with_two_uploads(token)
    r = request("POST", "/admin/apps/%d/coding-agent/runs" % aid, {"input": "[script:echo-tools] go"}, token=token)
    assert r.status == 202, r
    run_id = r.json()["id"]
    eventually(lambda: request("GET", "/admin/apps/%d/coding-agent/runs/%d" % (aid, run_id), token=token)
               .json()["status"] in ("completed", "failed", "cancelled"), timeout=60, what="the fixture run")
    r = request("POST", "/admin/apps/%d/publish" % aid, {}, token=token)
    assert r.status == 200, r
    app = request("GET", "/admin/apps/%d" % aid, token=token).json()
    ckpts = request("GET", "/admin/apps/%d/coding-agent/checkpoints" % aid, token=token).json()["items"]
    preview = request("GET", "/admin/apps/%d/preview" % aid, token=token).json()["url"]
    ids = {"apps": str(aid), "revisions": str(app["draft_revision_id"]), "runs": str(run_id),
           "checkpoints": str(ckpts[-1]["id"]), "diff": "draft", "files": "index.html"}
    return {"token": token, "org": slug, "app": app, "ids": ids, "preview": preview}


def instantiate(pattern, ids, replace=None):
    """The path of pattern with the fixture's ids; replace = (slot, text)
    puts text in slot number `slot` instead."""
    out, slot = [], 0
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if part in ("{id}", "{ref}", "{*}"):
            owner = parts[i - 1]
            assert owner in ids, "route %s: no fixture id for the segment after %r" % (pattern, owner)
            value = ids[owner]
            if replace and replace[0] == slot:
                value = replace[1]
            out.append(value)
            slot += 1
        else:
            out.append(part)
    return "/".join(out)


def slots(pattern):
    return [p for p in pattern.split("/") if p in ("{id}", "{ref}", "{*}")]


# ---------------------------------------------------------------- the cases

def body_cases(method, path, spec):
    """The body matrix of one route that reads a JSON body."""
    ct = {"Content-Type": "application/json"}
    valid = json.dumps(spec["valid"]).encode()
    cases = [
        Case("malformed", method, path, b'{"a": }', ct, 400, "malformed_json"),
        Case("truncated", method, path, valid[:max(1, len(valid) // 2)] if len(valid) > 2 else b'{"a"', ct,
             400, "malformed_json"),
        Case("trailing comma", method, path, b'{"a": 1,}', ct, 400, "malformed_json"),
        Case("trailing data", method, path, valid + b" x", ct, 400, "malformed_json"),
        Case("raw NUL after", method, path, valid + b"\x00\x00", ct, 400, "malformed_json"),
        Case("raw NUL in string", method, path, b'{"a": "x\x00y"}', ct, 400, "malformed_json"),
        Case("invalid UTF-8", method, path, b'{"a": "\xff\xfe\xc3"}', ct, 400, "invalid_utf8"),
        Case("overlong UTF-8", method, path, b'{"a": "\xc0\xaf"}', ct, 400, "invalid_utf8"),
        Case("huge", method, path, b'{"a": "' + b"x" * HUGE + b'"}', ct, 413, "body_too_large"),
        Case("deep arrays", method, path, b"[" * 10000 + b"]" * 10000, ct, 400, "malformed_json"),
        Case("deep objects", method, path, b'{"a":' * 10000 + b"1" + b"}" * 10000, ct, 400, "malformed_json"),
        Case("array body", method, path, b"[1, 2]", ct, 422),
        Case("string body", method, path, b'"text"', ct, 422),
        Case("number body", method, path, b"5", ct, 422),
        Case("form body", method, path, b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ]
    if not spec.get("empty_ok"):
        cases.append(Case("empty", method, path, b"", ct, 400, "malformed_json"))
    for field, (ftype, required) in spec["body"].items():
        for tname, value in TYPED_VALUES.items():
            if tname in ACCEPTS[ftype] or (tname == "null" and not required):
                continue  # null is "absent" for an optional field (docs/API.md)
            body = dict(spec["valid"], **{field: value})
            cases.append(Case("%s as %s" % (field, tname), method, path, json.dumps(body).encode(), ct,
                              422, None, field))
        if required:
            body = {k: v for k, v in spec["valid"].items() if k != field}
            cases.append(Case("%s missing" % field, method, path, json.dumps(body).encode(), ct,
                              422, "missing_field", field))
        if ftype == "string":
            for label, value in (("empty", ""), ("NUL", "a\u0000b"), ("too long", "x" * 300000)):
                body = dict(spec["valid"], **{field: value})
                cases.append(Case("%s %s" % (field, label), method, path, json.dumps(body).encode(), ct,
                                  422, None, field))
        if ftype == "int":
            for label, value in (("zero", 0), ("negative", -1), ("past int64", 2 ** 64), ("as text", "1")):
                body = dict(spec["valid"], **{field: value})
                cases.append(Case("%s %s" % (field, label), method, path, json.dumps(body).encode(), ct,
                                  422, None, field))
        if ftype == "files":
            for label, value in (("empty", {}), ("number content", {"a.html": 5}),
                                 ("escaping path", {"../x.html": "x"}), ("absolute path", {"/etc/x": "x"}),
                                 ("NUL path", {"a\u0000b": "x"}), ("folder path", {"a/": "x"}),
                                 ("reserved name", {"css/.kiln-tmp-0a": "x"})):
                body = dict(spec["valid"], **{field: value})
                cases.append(Case("%s %s" % (field, label), method, path, json.dumps(body).encode(), ct,
                                  422, None, field))
    return cases


def route_cases(method, pattern, name, public, allowed, fx):
    ids = fx["ids"]
    path = instantiate(pattern, ids)
    spec = ROUTE_INPUTS[name]
    valid = json.dumps(spec["valid"]).encode() if "valid" in spec else None
    ct = {"Content-Type": "application/json"} if valid is not None else {}
    cases = []
    # ids and path rests that cannot name anything
    for slot, kind in enumerate(slots(pattern)):
        bad = BAD_IDS + (MISSING_ID,)
        if kind == "{ref}":
            bad = tuple(b for b in bad if b != "0") + ("drafts",)
        if kind == "{*}":
            bad = ("nope.html", "a%00b", "%ff%fe", "x" * KILN_LONG, "a/../../../../etc/passwd",
                   "%2e%2e/%2e%2e/secret")
        for b in bad:
            cases.append(Case("slot %d = %s" % (slot, b[:20]), method, instantiate(pattern, ids, (slot, b)),
                              valid, ct, 400 if "%00" in b else None))
    # methods the route does not have
    for m in ODD_METHODS + tuple(x for x in OTHER_METHODS if x not in allowed):
        cases.append(Case("method " + m, m, path, status=405, code="method_not_allowed"))
    # too long for nginx, long for Kiln, a huge header, junk and missing tokens
    cases.append(Case("path past nginx", method, path + "/" + "a" * NGINX_LIMIT, status=414))
    cases.append(Case("long path", method, path + "/" + "a" * KILN_LONG, valid, ct))
    cases.append(Case("header past nginx", method, path, valid, dict(ct, **{"X-Big": "b" * NGINX_LIMIT}), 400))
    cases.append(Case("query past nginx", method, path + "?q=" + "q" * NGINX_LIMIT, status=414))
    if not public:
        cases.append(Case("no token", method, path, valid, ct, 401, "unauthorized", token=False))
        cases.append(Case("junk token", method, path, valid, dict(ct, Authorization="Bearer kiln_\xff" + "z" * 48),
                          401, "unauthorized"))
        cases.append(Case("huge token", method, path, valid,
                          dict(ct, Authorization="Bearer kiln_" + "z" * 10000), 401, "unauthorized"))
    for param, values in spec.get("query", {}).items():
        for v in values:
            cases.append(Case("%s=%s" % (param, v), method, "%s?%s=%s" % (path, param, v), status=422,
                              field=param))
    if "body" in spec:
        cases += body_cases(method, path, spec)
    elif method == "GET":
        # A body on a GET means nothing: it is read (drained) and ignored,
        # or refused; never a crash.
        for label, body in (("junk body", b"\xff\x00{{{"), ("huge body", b"x" * HUGE)):
            cases.append(Case(label, method, path, body, {"Content-Type": "application/json"}, allow_ok=True))
    return cases


def stream_cases(fx):
    ids = fx["ids"]
    pattern = "/admin/apps/{id}/coding-agent/runs/{id}/stream"
    path = instantiate(pattern, ids)
    cases = []
    for slot in range(2):
        for b in BAD_IDS + (MISSING_ID,):
            cases.append(Case("slot %d = %s" % (slot, b), "GET", instantiate(pattern, ids, (slot, b)), status=404))
    for m in ODD_METHODS + ("POST", "PUT", "PATCH", "DELETE"):
        cases.append(Case("method " + m, m, path, status=405, code="method_not_allowed"))
    cases += [
        Case("path past nginx", "GET", path + "?x=" + "a" * NGINX_LIMIT, status=414),
        Case("header past nginx", "GET", path, headers={"X-Big": "b" * NGINX_LIMIT}, status=400),
        Case("no token", "GET", path, status=401, code="unauthorized", token=False),
        Case("junk token", "GET", path, headers={"Authorization": "Bearer kiln_" + "z" * 48}, status=401),
        Case("huge body", "GET", path, b"x" * HUGE, allow_ok=True),
    ]
    for v in ("-1", "abc", "2147483648", "1e3"):
        cases.append(Case("after=" + v, "GET", path + "?after=" + v, status=422, field="after"))
        cases.append(Case("Last-Event-ID " + v, "GET", path, headers={"Last-Event-ID": v}, status=422,
                          field="Last-Event-ID"))
    return cases


def static_cases(label, good_path, bad_paths):
    """A location nginx serves from disk: missing or malformed paths and
    odd methods are refused in the JSON shape, never served or a 5xx."""
    cases = [Case("%s %s" % (label, p[:30]), "GET", p, token=False) for p in bad_paths]
    for m in ODD_METHODS + ("POST", "PUT", "PATCH", "DELETE"):
        cases.append(Case("%s method %s" % (label, m), m, good_path, token=False, status=405))
    cases += [
        Case(label + " path past nginx", "GET", good_path + "a" * NGINX_LIMIT, token=False, status=414),
        Case(label + " header past nginx", "GET", good_path, headers={"X-Big": "b" * NGINX_LIMIT},
             token=False, status=400),
        Case(label + " NUL", "GET", good_path + "a%00b", token=False, status=400),
    ]
    return cases


def location_cases(fx):
    locs = nginx_locations()
    preview = fx["preview"]  # /preview/<app>/<expiry>/<sig>/
    _, _, app_id, expiry, sig, _ = preview.split("/")
    forged = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    site = "/sites/%s/%s/" % (fx["org"], fx["app"]["slug"])
    covered = {
        "/": static_cases("builder", "/index.html", []),
        "/admin/": [],  # the router's routes, above
        "~ ^/admin/apps/[^/]+/coding-agent/runs/[^/]+/stream$": stream_cases(fx),
        "= /admin/internal/preview-auth": [
            Case("preview-auth from outside " + m, m, "/admin/internal/preview-auth", status=404,
                 headers={"X-Original-URI": preview}) for m in ("GET", "POST", "PROPFIND")],
        "~ ^/preview/(\\d+)/(\\d+)/([0-9a-f]+)/(.*)$": static_cases("preview", preview, [
            "/preview/%s/%s/%s/" % (app_id, expiry, forged),
            "/preview/%s/%s/%s/" % (app_id, int(expiry) + 1, sig),
            "/preview/%s/1/%s/" % (app_id, sig),
            "/preview/%s/%s/%s/" % (MISSING_ID, expiry, sig),
            "/preview/0/%s/%s/" % (expiry, sig),
            "/preview/99999999999999999999/%s/%s/" % (expiry, sig),
            "/preview/%s/%s/%s/nope.html" % (app_id, expiry, sig),
            "/preview/%s/%s/%s/%s" % (app_id, expiry, sig, "x" * KILN_LONG)]),
        # what the pattern above does not match
        "/preview/": [Case("preview " + p[:40], "GET", p, token=False, status=404) for p in (
            "/preview/", "/preview/%s/" % app_id, "/preview/abc/%s/%s/" % (expiry, sig),
            "/preview/%s/%s/XYZ/" % (app_id, expiry), "/preview/-1/%s/%s/" % (expiry, sig),
            "/preview/%s/%s/%s/%%2e%%2e/%%2e%%2e/secret" % (app_id, expiry, sig))],
        "~ ^/sites/([a-z0-9-]+)/([a-z0-9-]+)/(.*)$": static_cases("site", site, [
            site + "nope.html", "/sites/%s/never-published/" % fx["org"], "/sites/nobody/x/",
            site + "x" * KILN_LONG]),
        "/sites/": [Case("site " + p[:40], "GET", p, token=False, status=404) for p in (
            "/sites/", "/sites/%s/" % fx["org"], "/sites/%s/%s/" % (fx["org"].upper(), fx["app"]["slug"]),
            site + "%2e%2e/%2e%2e/secret", "/sites/a_b/c/")],  # nginx resolves dot segments first
    }
    unknown = [spec for spec, body in locs.items()
               if spec not in covered and not spec.startswith("@") and not re.search(r"^\s*internal;", body, re.M)]
    assert not unknown, "kiln.conf locations this test does not cover: %r" % unknown
    missing = [spec for spec in covered if spec not in locs]
    assert not missing, "locations covered here that kiln.conf no longer has: %r" % missing
    return [c for cases in covered.values() for c in cases]


# ---------------------------------------------------------------- the test

def test_every_route_refuses_every_bad_input_and_nothing_changes():
    routes = router_routes()
    names = {name for _, _, name, _ in routes}
    assert names == set(ROUTE_INPUTS), (
        "routes in src/router.c without an entry in ROUTE_INPUTS: %r; entries without a route: %r"
        % (sorted(names - set(ROUTE_INPUTS)), sorted(set(ROUTE_INPUTS) - names)))
    fx = make_fixture()
    allowed = {}
    for method, pattern, _, _ in routes:
        allowed.setdefault(pattern, set()).add(method)
    cases = []
    for method, pattern, name, public in routes:
        if ROUTE_INPUTS[name].get("outside", True):
            cases += route_cases(method, pattern, name, public, allowed[pattern], fx)
    cases += location_cases(fx)

    before = snapshot(fx["app"]["id"])
    deaths = api_worker_deaths()
    failures = run_cases(cases, fx["token"])
    after = snapshot(fx["app"]["id"])

    changed = [k for k in before if before[k] != after[k]]
    for k in changed:
        if isinstance(before[k], dict):
            diff = sorted(set(before[k].items()) ^ set(after[k].items()), key=str)[:10]
            failures.append("state changed: %s: %r" % (k, diff))
        else:
            failures.append("state changed: %s:\n%s\n---\n%s" % (k, before[k], after[k]))
    if api_worker_deaths() != deaths:
        failures.append("an API worker died during the matrix (log/kiln-api.log)")
    assert request("GET", "/admin/health").status == 200
    assert not failures, "%d of %d cases wrong:\n  %s" % (len(failures), len(cases), "\n  ".join(failures[:60]))
    print("     %d bad requests over %d routes and %d locations" % (len(cases), len(routes), len(nginx_locations())))

