"""Revisions and checkpoints through the real stack (nginx -> kiln-api ->
MariaDB, kiln-runner with the scripted model): uploads, a run's revision and
auto checkpoint, restore (undo) and the undo of a restore, single-file
revert, diffs, hostile archives planted on disk, kilnctl checkpoint
verify/gc, and kill -9 of the API worker in the middle of a restore."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import threading
import time
import urllib.parse

from kiln_test import ENV, api_restart, eventually, expect_error, new_org, request, unique

ORG = {}


def org():
    if not ORG:
        ORG["slug"], ORG["token"] = new_org()
    return ORG["token"]


# ---- helpers ---------------------------------------------------------------

def sha(data):
    return hashlib.sha256(data).hexdigest()


def b(s):
    return s.encode() if isinstance(s, str) else s


def api(aid, rest=""):
    return "/admin/apps/%d%s" % (aid, rest)


def ck(aid, rest=""):
    return "/admin/apps/%d/coding-agent/checkpoints%s" % (aid, rest)


def get(path, tok, status=200):
    r = request("GET", path, token=tok)
    assert r.status == status, (path, r)
    return r.json()


def post(path, body, tok, status=200):
    r = request("POST", path, body, token=tok, timeout=60)
    assert r.status == status, (path, r)
    return r.json()


def make_app(tok, files=None):
    s = unique("ck")
    app = post("/admin/apps", {"name": "App " + s, "slug": s}, tok, 201)
    if files:
        upload(tok, app["id"], files)
    return app["id"]


def upload(tok, aid, files, replace=True, status=201):
    return post(api(aid, "/revisions"), {"files": files, "replace": replace}, tok, status)


def app_row(tok, aid):
    return get(api(aid), tok)


def all_items(path, tok):
    items, cursor = [], None
    while True:
        page = get(path + ("?limit=100" + ("&cursor=" + cursor if cursor else "")), tok)
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def checkpoints(tok, aid):
    return all_items(ck(aid), tok)


def revisions(tok, aid):
    return all_items(api(aid, "/revisions"), tok)


def quote(path):
    return urllib.parse.quote(path, safe="/")


def revision_files(tok, aid, rev_id):
    """{path: bytes} of a revision, each file checked against the manifest."""
    rev = get(api(aid, "/revisions/%d" % rev_id), tok)
    out = {}
    for f in rev["files"]:
        r = request("GET", api(aid, "/revisions/%d/files/%s" % (rev_id, quote(f["path"]))), token=tok)
        assert r.status == 200, (f, r)
        assert len(r.body) == f["size"] and sha(r.body) == f["sha256"], f
        out[f["path"]] = r.body
    return out


def checkpoint_files(tok, aid, cid):
    c = get(ck(aid, "/%d" % cid), tok)
    out = {}
    for f in c["files"]:
        r = request("GET", ck(aid, "/%d/files/%s" % (cid, quote(f["path"]))), token=tok)
        assert r.status == 200, (f, r)
        assert len(r.body) == f["size"] and sha(r.body) == f["sha256"], f
        out[f["path"]] = r.body
    return out


def draft_files(tok, aid):
    return revision_files(tok, aid, app_row(tok, aid)["draft_revision_id"])


def workspace_dir(aid):
    return os.path.join(ENV["KILN_STATE"], "workspaces", str(aid))


def workspace_files(aid):
    """{path: bytes} of the workspace on disk (every regular file)."""
    root = workspace_dir(aid)
    out = {}
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def as_bytes(files):
    return {k: b(v) for k, v in files.items()}


def start_run(tok, aid, text):
    return post(api(aid, "/coding-agent/runs"), {"input": text}, tok, 202)


def wait_run(tok, aid, rid, timeout=40):
    def done():
        run = get(api(aid, "/coding-agent/runs/%d" % rid), tok)
        return run if run["status"] not in ("queued", "running") else None
    return eventually(done, timeout=timeout, what="run %d to end" % rid)


def run_events(tok, aid, rid):
    out, after = [], 0
    while True:
        page = get(api(aid, "/coding-agent/runs/%d/events?after=%d&limit=1000" % (rid, after)), tok)
        out += page["items"]
        after = page["next_after"]
        if page["terminal"] or not page["items"]:
            return out


def run_to_end(tok, aid, text):
    run = wait_run(tok, aid, start_run(tok, aid, text)["id"])
    return run, run_events(tok, aid, run["id"])


def event(events, kind):
    found = [e["payload"] for e in events if e["type"] == kind]
    assert len(found) == 1, (kind, [e["type"] for e in events])
    return found[0]


def db(sql):
    sock = os.path.join(ENV["KILN_STATE"], "run", "mysql.sock")
    p = subprocess.run(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-N", "-B", "kiln", "-e", sql],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return [line.split("\t") for line in p.stdout.splitlines()]


def archive_of(cid):
    (row,) = db("SELECT archive, sha256 FROM checkpoints WHERE id = %d" % cid)
    return row[0], row[1]


def store_path(name):
    return os.path.join(ENV["KILN_STATE"], "checkpoints", name)


def kilnctl_env(*args, env=None):
    binary = os.path.join(ENV["KILN_BUILD"], "bin", "kilnctl")
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([binary, "--config", ENV["KILN_CONFIG"], *args], capture_output=True,
                          text=True, timeout=120, env=e)


def restore(tok, aid, cid, body=None, status=200):
    return post(ck(aid, "/%d/restore" % cid), body or {}, tok, status)


# ---- uploads and the revision routes ---------------------------------------

def test_upload_creates_manual_revision_and_checkpoint():
    tok = org()
    aid = make_app(tok)
    assert app_row(tok, aid)["draft_revision_id"] is None
    files = {"index.html": "<h1>Hello ü</h1>\n", "style.css": "h1 { color: red }\n",
             "app.js": "console.log(1);\n", "data.json": '{"a": 1}', "notes/readme.md": "# notes\n",
             "raw.bin": "a\u0000b\u00ff", "empty.txt": ""}
    rev = upload(tok, aid, files)
    assert rev["origin"] == "manual" and rev["parent_id"] is None and rev["run_id"] is None, rev
    assert rev["checkpoint_id"] and rev["app_id"] == aid, rev
    want = as_bytes(files)
    assert rev["file_count"] == len(want) and rev["total_size"] == sum(len(v) for v in want.values()), rev
    assert [f["path"] for f in rev["files"]] == sorted(want), rev["files"]
    for f in rev["files"]:
        assert f["size"] == len(want[f["path"]]) and f["sha256"] == sha(want[f["path"]]), f
    assert app_row(tok, aid)["draft_revision_id"] == rev["id"]
    # its checkpoint
    c = get(ck(aid, "/%d" % rev["checkpoint_id"]), tok)
    assert c["type"] == "manual" and c["revision_id"] == rev["id"] and c["run_id"] is None, c
    assert c["file_count"] == len(want) and len(c["sha256"]) == 64 and c["size"] > 0, c
    assert c["label"] and c["created_at"].endswith("Z"), c
    assert [(f["path"], f["size"], f["sha256"]) for f in c["files"]] == \
        [(f["path"], f["size"], f["sha256"]) for f in rev["files"]]
    # the archive on disk is what the row says
    name, digest = archive_of(c["id"])
    with open(store_path(name), "rb") as fh:
        data = fh.read()
    assert digest == c["sha256"] == sha(data) and len(data) == c["size"], name
    # exact bytes and a sensible Content-Type
    types = {"index.html": "text/html", "style.css": "text/css", "app.js": "text/javascript",
             "data.json": "application/json", "notes/readme.md": "text/markdown",
             "raw.bin": "application/octet-stream", "empty.txt": "text/plain"}
    for path, ctype in types.items():
        r = request("GET", api(aid, "/revisions/%d/files/%s" % (rev["id"], path)), token=tok)
        assert r.status == 200 and r.body == want[path], (path, r)
        assert r.header("Content-Type").startswith(ctype), (path, r.header("Content-Type"))
    assert revision_files(tok, aid, rev["id"]) == want
    assert checkpoint_files(tok, aid, c["id"]) == want
    assert workspace_files(aid) == want
    for bad in ("nope.html", "..%2Findex.html", "notes", "%2Fetc%2Fpasswd"):
        r = request("GET", api(aid, "/revisions/%d/files/%s" % (rev["id"], bad)), token=tok)
        assert r.status == 404, (bad, r)
    expect_error(request("GET", api(aid, "/revisions/99999999"), token=tok), 404, "not_found")

    # replace: false merges into the draft
    rev2 = upload(tok, aid, {"extra.txt": "extra\n", "index.html": "<h1>v2</h1>"}, replace=False)
    assert rev2["parent_id"] == rev["id"] and rev2["origin"] == "manual", rev2
    merged = dict(want, **as_bytes({"extra.txt": "extra\n", "index.html": "<h1>v2</h1>"}))
    assert revision_files(tok, aid, rev2["id"]) == merged
    assert workspace_files(aid) == merged
    # replace: true (the default) makes the upload the whole draft
    rev3 = upload(tok, aid, {"only.html": "<p>only</p>", "notes/new.md": "n"})
    assert revision_files(tok, aid, rev3["id"]) == as_bytes({"only.html": "<p>only</p>", "notes/new.md": "n"})
    assert workspace_files(aid) == as_bytes({"only.html": "<p>only</p>", "notes/new.md": "n"})
    # the older revision keeps its files
    assert revision_files(tok, aid, rev["id"]) == want

    # lists: newest first, no manifests, one manual checkpoint per upload
    revs = revisions(tok, aid)
    assert [r["id"] for r in revs] == [rev3["id"], rev2["id"], rev["id"]], revs
    assert all("files" not in r and r["origin"] == "manual" for r in revs), revs
    cks = checkpoints(tok, aid)
    assert [(c["type"], c["revision_id"]) for c in cks] == \
        [("manual", rev3["id"]), ("manual", rev2["id"]), ("manual", rev["id"])], cks
    assert all("files" not in c for c in cks)
    page = get(api(aid, "/revisions?limit=1"), tok)
    assert len(page["items"]) == 1 and page["next_cursor"], page
    page2 = get(api(aid, "/revisions?limit=1&cursor=" + page["next_cursor"]), tok)
    assert page2["items"][0]["id"] == rev2["id"], page2


def test_upload_bad_paths_are_422_and_change_nothing():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>keep</h1>"})
    before_app = app_row(tok, aid)
    before_ws = workspace_files(aid)
    n_ck = len(checkpoints(tok, aid))
    bad_paths = ["../x", "/abs", "/etc/passwd", "a/../../b", "a\u0000b.html", "\u0000", "", "a//b", "./a",
                 "a/./b", "a/", "x/\u202egnp.js", "a\nb", "node_modules/x.js", ".git/config", "dist/index.html",
                 "x" * 2000]
    for path in bad_paths:
        for replace in (True, False):
            r = request("POST", api(aid, "/revisions"), {"files": {"ok.txt": "fine", path: "evil"},
                                                         "replace": replace}, token=tok)
            expect_error(r, 422)
    # a raw body with the NUL spelled in the key itself
    raw = b'{"files": {"ok.txt": "x", "a\\u0000.html": "y"}}'
    expect_error(request("POST", api(aid, "/revisions"), raw=raw, token=tok,
                         headers={"Content-Type": "application/json"}), 422)
    for body in ({"files": {"a.txt": 5}}, {"files": []}, {"files": {}}, {"files": "x"},
                 {"files": {"a.txt": "x"}, "replace": "yes"}):
        expect_error(request("POST", api(aid, "/revisions"), body, token=tok), 422)
    err = expect_error(request("POST", api(aid, "/revisions"), {"replace": True}, token=tok), 422, "missing_field")
    assert err["field"] == "files", err
    # a file where the workspace has a folder, or a folder where it has a file
    sub = make_app(tok, {"a/b.txt": "x", "keep.txt": "k"})
    sub_before = workspace_files(sub)
    for files, replace in (({"a": "y"}, True), ({"a": "y", "keep.txt": "k"}, False),
                           ({"keep.txt/x": "y"}, False), ({"c": "1", "c/d": "2"}, True)):
        expect_error(request("POST", api(sub, "/revisions"), {"files": files, "replace": replace}, token=tok), 422)
        assert workspace_files(sub) == sub_before, files
    assert draft_files(tok, sub) == sub_before
    # replace: a file where a folder of files was becomes possible once they go
    upload(tok, sub, {"keep.txt/x": "y"})
    assert workspace_files(sub) == {"keep.txt/x": b"y"} == draft_files(tok, sub)
    after = app_row(tok, aid)
    assert after["draft_revision_id"] == before_app["draft_revision_id"], after
    assert len(checkpoints(tok, aid)) == n_ck
    assert workspace_files(aid) == before_ws


def test_writes_while_a_run_is_active_are_409():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>keep</h1>", "style.css": "a{}"})
    (c0,) = checkpoints(tok, aid)
    run = start_run(tok, aid, "[script:slow] take your time")
    try:
        err = expect_error(request("POST", api(aid, "/revisions"), {"files": {"x.txt": "x"}}, token=tok),
                           409, "run_active")
        assert err["run_id"] == run["id"], err
        err = expect_error(request("POST", ck(aid, "/%d/restore" % c0["id"]), {}, token=tok), 409, "run_active")
        assert err["run_id"] == run["id"], err
        err = expect_error(request("POST", ck(aid, "/%d/restore" % c0["id"]), {"dry_run": True}, token=tok),
                           409, "run_active")
        expect_error(request("POST", ck(aid, "/%d/revert-file" % c0["id"]), {"path": "style.css"}, token=tok),
                     409, "run_active")
        assert workspace_files(aid) == as_bytes({"index.html": "<h1>keep</h1>", "style.css": "a{}"})
    finally:
        post(api(aid, "/coding-agent/runs/%d/cancel" % run["id"]), {"mode": "rollback"}, tok, 202)
        wait_run(tok, aid, run["id"])
    upload(tok, aid, {"x.txt": "x"}, replace=False)


# ---- a run's revision and checkpoint ---------------------------------------

def test_run_records_revision_and_auto_checkpoint():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>before</h1>", "keep.txt": "keep\n"})
    (c0,) = checkpoints(tok, aid)
    up_rev = app_row(tok, aid)["draft_revision_id"]
    run, events = run_to_end(tok, aid, "[script:default] build a landing page")
    assert run["status"] == "completed", run
    assert run["base_revision_id"] == up_rev and run["revision_id"] and run["checkpoint_id"], run
    rc = event(events, "revision.created")
    assert rc["revision_id"] == run["revision_id"] and rc["parent_id"] == up_rev, rc
    assert sorted(rc["added"]) == ["app.js", "style.css"] and rc["changed"] == ["index.html"], rc
    assert rc["deleted"] == [], rc
    cc = event(events, "checkpoint.created")
    assert cc["checkpoint_id"] == run["checkpoint_id"] and cc["revision_id"] == run["revision_id"], cc
    done = event(events, "run.completed")
    assert done["changed"] is True and done["revision_id"] == run["revision_id"], done
    assert done["checkpoint_id"] == run["checkpoint_id"], done

    cks = checkpoints(tok, aid)
    assert [c["id"] for c in cks] == [run["checkpoint_id"], c0["id"]], cks
    c = cks[0]
    assert c["type"] == "auto" and c["run_id"] == run["id"] and c["revision_id"] == run["revision_id"], c
    assert c["label"] == cc["label"] and "landing page" in c["label"], c
    assert c["summary"] == cc["summary"] and c["summary"], c
    assert c["file_count"] == 4 and len(c["sha256"]) == 64 and c["size"] > 0, c
    name, digest = archive_of(c["id"])
    with open(store_path(name), "rb") as fh:
        data = fh.read()
    assert digest == c["sha256"] == sha(data) and len(data) == c["size"]

    rev = get(api(aid, "/revisions/%d" % run["revision_id"]), tok)
    assert rev["origin"] == "run" and rev["run_id"] == run["id"] and rev["parent_id"] == up_rev, rev
    assert rev["checkpoint_id"] == c["id"], rev
    full = get(ck(aid, "/%d" % c["id"]), tok)
    assert [(f["path"], f["size"], f["sha256"]) for f in full["files"]] == \
        [(f["path"], f["size"], f["sha256"]) for f in rev["files"]], full
    files = checkpoint_files(tok, aid, c["id"])
    assert sorted(files) == ["app.js", "index.html", "keep.txt", "style.css"], sorted(files)
    assert b"Light for your ideas" in files["index.html"] and files["keep.txt"] == b"keep\n"
    assert files == revision_files(tok, aid, rev["id"]) == workspace_files(aid)
    assert app_row(tok, aid)["draft_revision_id"] == rev["id"]
    expect_error(request("GET", ck(aid, "/%d/files/nope.txt" % c["id"]), token=tok), 404)
    expect_error(request("GET", ck(aid, "/99999999"), token=tok), 404, "not_found")
    # another organization sees none of it
    _, other = new_org()
    for path in (ck(aid, "/%d" % c["id"]), ck(aid, "/%d/files/index.html" % c["id"]),
                 ck(aid, "/%d/diff/draft" % c["id"])):
        expect_error(request("GET", path, token=other), 404)
    expect_error(request("POST", ck(aid, "/%d/restore" % c0["id"]), {}, token=other), 404)


def test_no_change_run_records_nothing():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>same</h1>"})
    before = app_row(tok, aid)
    n_rev, n_ck = len(revisions(tok, aid)), len(checkpoints(tok, aid))
    run, events = run_to_end(tok, aid, "hello there [script:no-change]")
    assert run["status"] == "completed", run
    assert run["revision_id"] is None and run["checkpoint_id"] is None, run
    done = event(events, "run.completed")
    assert done["changed"] is False and done["revision_id"] is None and done["checkpoint_id"] is None, done
    assert not [e for e in events if e["type"] in ("revision.created", "checkpoint.created")]
    assert len(revisions(tok, aid)) == n_rev and len(checkpoints(tok, aid)) == n_ck
    assert app_row(tok, aid)["draft_revision_id"] == before["draft_revision_id"]


def test_upload_after_a_run_is_checkpointed_before_the_next_run_changes():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>start</h1>"})
    run1, _ = run_to_end(tok, aid, "[script:default] build a landing page")
    assert run1["status"] == "completed", run1
    uploaded = upload(tok, aid, {"style.css": ":root { --title: red }\n", "extra.txt": "mine\n"},
                      replace=False)
    up_files = revision_files(tok, aid, uploaded["id"])
    run2, events = run_to_end(tok, aid, "make the title blue")
    assert run2["status"] == "completed" and run2["base_revision_id"] == uploaded["id"], run2
    assert event(events, "revision.created")["changed"] == ["style.css"]
    cks = checkpoints(tok, aid)
    ids = [c["id"] for c in cks]
    assert ids == sorted(ids, reverse=True)
    assert ids.index(uploaded["checkpoint_id"]) == ids.index(run2["checkpoint_id"]) + 1, cks
    # the uploaded state survives in its checkpoint and comes back on restore
    assert checkpoint_files(tok, aid, uploaded["checkpoint_id"]) == up_files
    assert b"--title: red" in up_files["style.css"]
    assert b"#1d4ed8" in workspace_files(aid)["style.css"]
    restore(tok, aid, uploaded["checkpoint_id"])
    assert workspace_files(aid) == up_files == draft_files(tok, aid)


# ---- restore (undo) and the undo of a restore --------------------------------

def test_restore_is_undo_and_can_itself_be_undone():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>mine</h1>", "old.txt": "old\n"})
    (c0,) = checkpoints(tok, aid)
    pre = draft_files(tok, aid)
    run, _ = run_to_end(tok, aid, "[script:default] build a landing page")
    post_files = draft_files(tok, aid)
    assert post_files != pre and workspace_files(aid) == post_files
    run_rev = run["revision_id"]

    # dry run: says what would change, changes nothing
    n_ck = len(checkpoints(tok, aid))
    d = restore(tok, aid, c0["id"], {"dry_run": True})
    assert d["dry_run"] is True and d["added"] == [] and d["changed"] == ["index.html"], d
    assert sorted(d["deleted"]) == ["app.js", "style.css"], d
    assert "revision" not in d
    assert app_row(tok, aid)["draft_revision_id"] == run_rev and len(checkpoints(tok, aid)) == n_ck
    assert workspace_files(aid) == post_files

    # a stale expected_revision_id: 409 revision_moved, nothing changes
    err = expect_error(request("POST", ck(aid, "/%d/restore" % c0["id"]),
                               {"expected_revision_id": c0["revision_id"]}, token=tok), 409, "revision_moved")
    assert err["draft_revision_id"] == run_rev, err
    assert workspace_files(aid) == post_files and app_row(tok, aid)["draft_revision_id"] == run_rev

    # the restore
    res = restore(tok, aid, c0["id"], {"expected_revision_id": run_rev})
    assert res["added"] == [] and res["changed"] == ["index.html"], res
    assert sorted(res["deleted"]) == ["app.js", "style.css"], res
    rev, cp = res["revision"], res["checkpoint"]
    assert rev["origin"] == "restore" and rev["parent_id"] == run_rev, rev
    assert cp["type"] == "restore" and cp["revision_id"] == rev["id"] and cp["run_id"] is None, cp
    assert str(c0["id"]) in cp["label"], cp
    assert workspace_files(aid) == pre == draft_files(tok, aid)
    full = get(api(aid, "/revisions/%d" % rev["id"]), tok)
    assert full["origin"] == "restore" and full["checkpoint_id"] == cp["id"], full
    assert app_row(tok, aid)["draft_revision_id"] == rev["id"]
    assert checkpoints(tok, aid)[0]["id"] == cp["id"]

    # undo the undo: back to the run's files
    res2 = restore(tok, aid, run["checkpoint_id"], {"expected_revision_id": rev["id"]})
    assert sorted(res2["added"]) == ["app.js", "style.css"] and res2["changed"] == ["index.html"], res2
    assert res2["deleted"] == [] and res2["revision"]["parent_id"] == rev["id"], res2
    assert workspace_files(aid) == post_files == draft_files(tok, aid)
    # restoring what is already there still records a restore, and changes no file
    res3 = restore(tok, aid, run["checkpoint_id"])
    assert res3["added"] == res3["changed"] == res3["deleted"] == [], res3
    assert workspace_files(aid) == post_files

    expect_error(request("POST", ck(aid, "/99999999/restore"), {}, token=tok), 404)
    other = make_app(tok, {"index.html": "other"})
    (oc,) = checkpoints(tok, other)
    expect_error(request("POST", ck(aid, "/%d/restore" % oc["id"]), {}, token=tok), 404)
    for body in ({"dry_run": "yes"}, {"expected_revision_id": "x"}, {"expected_revision_id": -1}):
        expect_error(request("POST", ck(aid, "/%d/restore" % c0["id"]), body, token=tok), 422)
    assert workspace_files(aid) == post_files


def _write_raw(aid, files):
    """Files put in the workspace behind Kiln's back (as a command could)."""
    for p, v in files.items():
        path = os.path.join(workspace_dir(aid), p)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b(v))


def test_restore_keeps_ignored_folders_and_the_dry_run_says_exactly_what_happens():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>one</h1>", "web/app.js": "one()"})
    (c0,) = checkpoints(tok, aid)
    upload(tok, aid, {"index.html": "<h1>two</h1>", "web/app.js": "two()", "extra.txt": "x"})
    deps = {"node_modules/left-pad/index.js": "module.exports = pad;\n", "web/node_modules/x/x.js": "x\n",
            ".git/HEAD": "ref: refs/heads/main\n", "dist/index.html": "<h1>built</h1>"}
    _write_raw(aid, deps)
    os.symlink("/etc/passwd", os.path.join(workspace_dir(aid), "passwd"))
    os.mkfifo(os.path.join(workspace_dir(aid), "pipe"))
    d = restore(tok, aid, c0["id"], {"dry_run": True})
    assert d["dry_run"] is True and d["compared_with"] == "workspace", d
    assert d["added"] == [] and d["changed"] == ["index.html", "web/app.js"] and d["deleted"] == ["extra.txt"], d
    assert d["kept"] == [".git", "dist", "node_modules", "web/node_modules"], d
    assert d["untracked_removed"] == ["passwd", "pipe"] and d["untracked_removed_count"] == 2, d
    # nothing was touched
    assert os.path.islink(os.path.join(workspace_dir(aid), "passwd"))
    res = restore(tok, aid, c0["id"])
    for k in ("added", "changed", "deleted", "kept", "untracked_removed"):
        assert res[k] == d[k], (k, res[k], d[k])
    ws = workspace_files(aid)
    assert ws == dict(as_bytes({"index.html": "<h1>one</h1>", "web/app.js": "one()"}), **as_bytes(deps)), sorted(ws)
    assert not os.path.lexists(os.path.join(workspace_dir(aid), "passwd"))
    assert not os.path.lexists(os.path.join(workspace_dir(aid), "pipe"))
    # the draft is the checkpoint's files; ignored folders never enter it
    assert draft_files(tok, aid) == as_bytes({"index.html": "<h1>one</h1>", "web/app.js": "one()"})
    # a checkpoint whose files take a kept folder's place wins over it
    shutil.rmtree(os.path.join(workspace_dir(aid), "web"))
    upload(tok, aid, {"index.html": "<h1>three</h1>", "web": "now a file"})
    c_file = checkpoints(tok, aid)[0]
    upload(tok, aid, {"index.html": "<h1>four</h1>", "web/app.js": "four()"})
    _write_raw(aid, {"web/node_modules/x/x.js": "x\n"})
    d = restore(tok, aid, c_file["id"], {"dry_run": True})
    assert d["kept"] == [".git", "dist", "node_modules"] and d["untracked_removed"] == ["web/node_modules/"], d
    res = restore(tok, aid, c_file["id"])
    assert res["kept"] == d["kept"] and res["untracked_removed"] == d["untracked_removed"], res
    ws = workspace_files(aid)
    assert ws["web"] == b"now a file" and "node_modules/left-pad/index.js" in ws, sorted(ws)
    assert not [p for p in ws if p.startswith("web/")], sorted(ws)


def test_restore_works_when_the_workspace_is_over_its_limits():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>good</h1>"})
    (c0,) = checkpoints(tok, aid)
    draft = app_row(tok, aid)["draft_revision_id"]
    # a command filled the workspace past ws_max_files (5000 by default)
    _write_raw(aid, {"junk/%05d.txt" % i: "j" for i in range(5001)})
    junk = ["junk/%05d.txt" % i for i in range(5001)]
    # the over-limit workspace is still listed exactly: the plan names
    # every file the restore takes away
    d = restore(tok, aid, c0["id"], {"dry_run": True})
    assert d["compared_with"] == "workspace", {k: v for k, v in d.items() if k != "deleted"}
    assert d["added"] == d["changed"] == [] and d["deleted"] == junk, len(d["deleted"])
    diff = get(ck(aid, "/%d/diff/draft" % c0["id"]), tok)
    assert diff["changed"] == [] and len(diff["added"]) + len(diff["removed"]) == 5001, \
        {k: (len(v) if isinstance(v, list) else v) for k, v in diff.items()}
    res = restore(tok, aid, c0["id"], {"expected_revision_id": draft})
    assert res["compared_with"] == "workspace" and res["revision"]["parent_id"] == draft, res
    assert workspace_files(aid) == as_bytes({"index.html": "<h1>good</h1>"}) == draft_files(tok, aid)
    assert get(ck(aid, "/%d/diff/draft" % c0["id"]), tok)["changed"] == []


# ---- single-file revert -----------------------------------------------------

def test_revert_file_restores_changed_deletes_added_and_brings_back_deleted():
    tok = org()
    v0 = {"index.html": "<h1>one</h1>", "gone.txt": "bye\n", "same.txt": "s", "sub/deep.css": "a{}"}
    aid = make_app(tok, v0)
    (c0,) = checkpoints(tok, aid)
    upload(tok, aid, {"index.html": "<h1>two</h1>", "new.txt": "n", "same.txt": "s", "sub/deep.css": "b{}"})
    n_rev = len(revisions(tok, aid))

    def revert(path, action):
        draft = app_row(tok, aid)["draft_revision_id"]
        res = post(ck(aid, "/%d/revert-file" % c0["id"]), {"path": path}, tok)
        assert res["path"] == path and res["action"] == action, res
        assert res["revision"]["origin"] == "restore" and res["revision"]["parent_id"] == draft, res
        assert res["checkpoint"]["type"] == "restore", res
        assert res["checkpoint"]["revision_id"] == res["revision"]["id"], res
        assert app_row(tok, aid)["draft_revision_id"] == res["revision"]["id"]
        assert workspace_files(aid) == draft_files(tok, aid)
        return res

    revert("index.html", "restored")
    ws = workspace_files(aid)
    assert ws["index.html"] == b"<h1>one</h1>" and ws["new.txt"] == b"n" and ws["sub/deep.css"] == b"b{}", ws
    revert("new.txt", "deleted")
    assert "new.txt" not in workspace_files(aid)
    revert("gone.txt", "restored")
    assert workspace_files(aid)["gone.txt"] == b"bye\n"
    revert("sub/deep.css", "restored")
    assert workspace_files(aid) == as_bytes(v0) == draft_files(tok, aid)
    assert len(revisions(tok, aid)) == n_rev + 4

    for bad in ("../x", "/etc/passwd", "a/../../b", "", "a\u0000b", "dist/x.js"):
        expect_error(request("POST", ck(aid, "/%d/revert-file" % c0["id"]), {"path": bad}, token=tok), 422)
    expect_error(request("POST", ck(aid, "/%d/revert-file" % c0["id"]), {}, token=tok), 422, "missing_field")
    expect_error(request("POST", ck(aid, "/%d/revert-file" % c0["id"]), {"path": 7}, token=tok), 422)
    # a path in neither the checkpoint nor the draft: nothing to revert
    expect_error(request("POST", ck(aid, "/%d/revert-file" % c0["id"]), {"path": "never.txt"}, token=tok), 404)
    assert len(revisions(tok, aid)) == n_rev + 4
    assert workspace_files(aid) == as_bytes(v0)


# ---- diff ---------------------------------------------------------------------

def test_diff_between_checkpoints_and_against_the_draft():
    tok = org()
    big_a = "".join("line %05d of the big file, some padding to make it longer....\n" % i for i in range(6000))
    big_b = "".join("LINE %05d OF THE BIG FILE, SOME PADDING TO MAKE IT LONGER....\n" % i for i in range(6000))
    v0 = {"a.txt": "line1\nline2\nline3\n", "0-bin.dat": "\u0000\u0001bin", "gone.txt": "g\n",
          "same.txt": "same\n", "big.txt": big_a}
    v1 = {"a.txt": "line1\nLINE2\nline3\n", "0-bin.dat": "\u0000\u0002bin", "new.txt": "n\n",
          "same.txt": "same\n", "big.txt": big_b}
    aid = make_app(tok, v0)
    c0 = checkpoints(tok, aid)[0]["id"]
    upload(tok, aid, v1)
    c1 = checkpoints(tok, aid)[0]["id"]

    for to in (str(c1), "draft"):
        d = get(ck(aid, "/%d/diff/%s" % (c0, to)), tok)
        assert d["from"] == c0 and d["to"] == (c1 if to != "draft" else "draft"), d
        assert d["added"] == ["new.txt"] and d["removed"] == ["gone.txt"], d
        changed = {e["path"]: e for e in d["changed"]}
        assert sorted(changed) == ["0-bin.dat", "a.txt", "big.txt"], d["changed"]
        a = changed["a.txt"]
        assert a["binary"] is False and a["truncated"] is False, a
        assert a["diff"].splitlines() == ["--- a/a.txt", "+++ b/a.txt", "@@ -1,3 +1,3 @@",
                                          " line1", "-line2", "+LINE2", " line3"], a["diff"]
        assert changed["0-bin.dat"]["binary"] is True and not changed["0-bin.dat"]["diff"], changed["0-bin.dat"]
        big = changed["big.txt"]
        assert big["truncated"] is True and big["binary"] is False, {k: big[k] for k in ("binary", "truncated")}
        assert len(big["diff"]) < len(big_a) + len(big_b) and big["diff"].startswith("--- a/big.txt"), \
            len(big["diff"])
        assert d["truncated"] is True and "omitted" not in big, d["truncated"]
    # the reverse direction
    d = get(ck(aid, "/%d/diff/%d" % (c1, c0)), tok)
    assert d["added"] == ["gone.txt"] and d["removed"] == ["new.txt"], d
    a = [e for e in d["changed"] if e["path"] == "a.txt"][0]
    assert "-LINE2" in a["diff"].splitlines() and "+line2" in a["diff"].splitlines(), a
    # same checkpoint: nothing
    d = get(ck(aid, "/%d/diff/%d" % (c1, c1)), tok)
    assert d["added"] == d["removed"] == d["changed"] == [], d
    # the draft moves with uploads
    upload(tok, aid, {"a.txt": "line1\nline2\nline3\nline4\n"}, replace=False)
    d = get(ck(aid, "/%d/diff/draft" % c1), tok)
    a = [e for e in d["changed"] if e["path"] == "a.txt"][0]
    assert "+line4" in a["diff"].splitlines() and "-LINE2" in a["diff"].splitlines(), a
    expect_error(request("GET", ck(aid, "/%d/diff/99999999" % c0), token=tok), 404)
    expect_error(request("GET", ck(aid, "/99999999/diff/draft"), token=tok), 404)


def _api_read_bytes():
    """Bytes the API workers have read(2) so far (their /proc/PID/io rchar)."""
    total = 0
    for pid in _api_children():
        try:
            with open("/proc/%d/io" % pid) as fh:
                total += int(next(line for line in fh if line.startswith("rchar:")).split()[1])
        except (OSError, StopIteration):
            continue
    return total


def test_diff_reads_each_archive_once_and_stops_at_its_budget():
    tok = org()
    rnd = random.Random(3)

    def text(tag):
        return "".join("%s line %d %s\n" % (tag, n, "".join(rnd.choice("abcdefghij") for _ in range(60)))
                       for n in range(180))
    old = {"f/%03d.txt" % i: text("old") for i in range(300)}
    new = {"f/%03d.txt" % i: text("new") for i in range(300)}
    # larger than one side may be: left out, and the files after it still count
    old["a-big.txt"] = "x\n" * (600 * 1024)
    new["a-big.txt"] = "y\n" * (600 * 1024)
    aid = make_app(tok, old)
    c0 = checkpoints(tok, aid)[0]
    upload(tok, aid, new)
    c1 = checkpoints(tok, aid)[0]
    archives = c0["size"] + c1["size"]
    # the stack is otherwise idle: what the workers read is this request
    before = _api_read_bytes()
    t0 = time.time()
    d = get(ck(aid, "/%d/diff/%d" % (c0["id"], c1["id"])), tok)
    took = time.time() - t0
    read = _api_read_bytes() - before
    # each archive verified (one pass) and streamed (another): about twice
    # their size, never a pass per changed file
    assert read < 3 * archives + (1 << 20), (read, archives)
    assert took < 10, took
    changed = d["changed"]
    assert [e["path"] for e in changed] == ["a-big.txt"] + ["f/%03d.txt" % i for i in range(300)], changed[:2]
    assert d["truncated"] is True
    big = changed[0]
    assert big["omitted"] == "too_large" and big["diff"] is None and big["truncated"] is True, big
    diffs = [e for e in changed[1:] if e["diff"] is not None]
    assert len(diffs) >= 5, len(diffs)
    # every file in path order gets its diff until the output budget is
    # spent; the one that spends it is cut, the rest are not read
    assert changed[1:len(diffs) + 1] == diffs
    assert all(e["truncated"] is False and "omitted" not in e for e in diffs[:-1]), diffs[-2]
    assert diffs[0]["diff"].splitlines()[:3] == ["--- a/f/000.txt", "+++ b/f/000.txt", "@@ -1,180 +1,180 @@"]
    assert sum(len(e["diff"].encode()) for e in diffs) <= 256 * 1024 + 200
    rest = changed[len(diffs) + 1:]
    assert rest and all(e["diff"] is None and e["truncated"] is True and e["omitted"] == "budget"
                        for e in rest), rest[0]
    # against the draft: the same bounds, the workspace read file by file
    d = get(ck(aid, "/%d/diff/draft" % c0["id"]), tok)
    assert [e["path"] for e in d["changed"] if e["diff"] is not None] == [e["path"] for e in diffs], \
        [e["path"] for e in d["changed"] if e["diff"] is not None][:3]
    # a small diff is whole and says so
    upload(tok, aid, {"f/000.txt": old["f/000.txt"] + "one more\n"}, replace=False)
    c2 = checkpoints(tok, aid)[0]
    d = get(ck(aid, "/%d/diff/%d" % (c1["id"], c2["id"])), tok)
    assert d["truncated"] is False and [e["path"] for e in d["changed"]] == ["f/000.txt"], d


# ---- hostile archives planted on disk --------------------------------------

class _Tar:
    """A tar stream built entry by entry (ustar headers, GNU base-256 for
    sizes ustar cannot hold), with no record padding after the end blocks."""

    def __init__(self):
        self.parts = []

    def add(self, name, data=b"", size=None, **kw):
        ti = tarfile.TarInfo(name)
        ti.size = len(data) if size is None else size
        ti.mode = kw.pop("mode", 0o644)
        ti.mtime = 0
        for k, v in kw.items():
            setattr(ti, k, v)
        fmt = tarfile.GNU_FORMAT if ti.size >= 8 << 30 else tarfile.USTAR_FORMAT
        self.parts.append(ti.tobuf(format=fmt))
        if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and data:
            self.parts.append(data + b"\0" * (-len(data) % 512))
        return self

    def bytes(self, end=True):
        return b"".join(self.parts) + (b"\0" * 1024 if end else b"")


def _manifest(files, sizes=None):
    """A kiln-checkpoint/1 manifest; sizes may claim other sizes than the data's."""
    sizes = sizes or {}
    return json.dumps({"format": "kiln-checkpoint/1", "sources": [],
                       "files": [{"path": p, "size": sizes.get(p, len(d)), "sha256": sha(d)}
                                 for p, d in sorted(files.items())]},
                      separators=(",", ":")).encode()


def _plant(tar_bytes):
    """Compresses like the store (zstd) and writes it under its content name."""
    z = subprocess.run(["zstd", "-q", "-c", "-3"], input=tar_bytes, capture_output=True, check=True).stdout
    digest = sha(z)
    name = "%s/%s.tar.zst" % (digest[:2], digest)
    os.makedirs(os.path.dirname(store_path(name)), exist_ok=True)
    with open(store_path(name), "wb") as fh:
        fh.write(z)
    return name, digest


def test_hostile_archives_are_refused_and_leave_the_workspace_alone():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>old</h1>"})
    (c0,) = checkpoints(tok, aid)
    current = {"index.html": "<h1>current</h1>", "x.txt": "x\n"}
    upload(tok, aid, current)
    draft = app_row(tok, aid)["draft_revision_id"]
    n_ck = len(checkpoints(tok, aid))
    # a folder no checkpoint holds, which a refused restore must not touch
    deps = as_bytes({"node_modules/dep/index.js": "dep()\n"})
    _write_raw(aid, deps)
    current_ws = dict(as_bytes(current), **deps)
    orig = archive_of(c0["id"])
    evil_dir = os.path.join(ENV["KILN_STATE"], "evil-%d" % aid)
    evil_abs = os.path.join(ENV["KILN_STATE"], "evil-abs-%d" % aid)
    good = {"index.html": b"<h1>hand-made</h1>"}
    obj = "objects/" + sha(good["index.html"])
    m = _manifest(good)

    def ok_start():
        return _Tar().add(".kiln/manifest.json", m)

    cases = {
        "entry traversal": ok_start().add("../../evil-%d" % aid, b"pwned").add(obj, good["index.html"]),
        "object traversal": ok_start().add("objects/../../../evil", b"pwned"),
        "manifest traversal": _Tar().add(".kiln/manifest.json", _manifest({"../evil.html": good["index.html"]}))
        .add(obj, good["index.html"]),
        "manifest absolute": _Tar().add(".kiln/manifest.json", _manifest({evil_abs: good["index.html"]}))
        .add(obj, good["index.html"]),
        "symlink then through it": ok_start().add("objects", type=tarfile.SYMTYPE, linkname=evil_dir)
        .add(obj, good["index.html"]),
        "symlink object": ok_start().add(obj, type=tarfile.SYMTYPE, linkname="/etc/passwd"),
        "relative symlink staying inside": ok_start().add(obj, type=tarfile.SYMTYPE, linkname="index.html"),
        "hard link object": ok_start().add(obj, type=tarfile.LNKTYPE, linkname="/etc/passwd"),
        "absolute entry": ok_start().add(evil_abs, b"pwned").add(obj, good["index.html"]),
        "device node": ok_start().add(obj, type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        "fifo": ok_start().add(obj, type=tarfile.FIFOTYPE),
        "directory": ok_start().add("objects/", type=tarfile.DIRTYPE, mode=0o755).add(obj, good["index.html"]),
        "setuid object": ok_start().add(obj, good["index.html"], mode=0o4755),
        "wrong content": ok_start().add(obj, b"<h1>other bytes!</h1>"[:len(good["index.html"])]),
        "missing content": ok_start(),
        "extra entry": ok_start().add(obj, good["index.html"]).add("objects/" + "0" * 64, b"x"),
        "manifest not first": _Tar().add(obj, good["index.html"]).add(".kiln/manifest.json", m),
        "manifest not json": _Tar().add(".kiln/manifest.json", b"{nope").add(obj, good["index.html"]),
        "huge header": ok_start().add(obj, size=100 << 30),
        # caps: more files than max_entries (10,000), a total past
        # max_total_size (512 MiB) in files each under max_entry_size
        "too many entries": _Tar().add(".kiln/manifest.json",
                                       _manifest({"f/%05d" % i: good["index.html"] for i in range(10001)}))
        .add(obj, good["index.html"]),
        "total over the cap": _Tar().add(".kiln/manifest.json",
                                         _manifest({"f/%d" % i: good["index.html"] for i in range(9)},
                                                   {"f/%d" % i: 60 << 20 for i in range(9)}))
        .add(obj, size=60 << 20),
        "truncated": ok_start().add(obj, size=len(good["index.html"])),
        "zero bomb": ok_start().add(obj, b"\0" * (96 << 20)),
    }
    planted, refused = [], []
    try:
        for what, tar in cases.items():
            name, digest = _plant(tar.bytes(end=what != "truncated"))
            planted.append(name)
            db("UPDATE checkpoints SET archive = '%s', sha256 = '%s' WHERE id = %d" % (name, digest, c0["id"]))
            t0 = time.time()
            r = request("POST", ck(aid, "/%d/restore" % c0["id"]), {}, token=tok, timeout=60)
            assert 400 <= r.status < 500, (what, r)
            assert time.time() - t0 < 10, (what, time.time() - t0)
            refused.append((what, r.status, r.json()["error"]["message"]))
            assert workspace_files(aid) == current_ws, what
            assert app_row(tok, aid)["draft_revision_id"] == draft, what
            assert len(checkpoints(tok, aid)) == n_ck, what
            assert not os.path.lexists(evil_dir) and not os.path.lexists(evil_abs), what
            assert not os.path.lexists(os.path.join(ENV["KILN_STATE"], "evil")), what
            # the staging folder went with the refusal; nothing is held
            left = [n for n in os.listdir(os.path.join(ENV["KILN_STATE"], "workspaces"))
                    if n.startswith((".restore-%d-" % aid, ".kept-%d-" % aid))]
            assert not left, (what, left)
            # one file: refused, or (when the hostile part is not on the way
            # to it) exactly the bytes whose sha256 the manifest names
            r = request("POST", ck(aid, "/%d/revert-file" % c0["id"]), {"path": "index.html"}, token=tok)
            assert 400 <= r.status < 500 or r.status == 200, (what, r)
            if r.status == 200:
                assert workspace_files(aid) == dict(current_ws, **good), what
                draft = upload(tok, aid, current)["id"]
                n_ck = len(checkpoints(tok, aid))
            assert workspace_files(aid) == current_ws, what
            assert not os.path.lexists(evil_dir) and not os.path.lexists(evil_abs), what
        # each for its own reason
        reasons = {"symlink then through it": "symbolic links are refused",
                   "relative symlink staying inside": "symbolic links are refused",
                   "hard link object": "hard links are refused", "device node": "only regular files",
                   "fifo": "only regular files", "directory": "only regular files",
                   "setuid object": "setuid", "absolute entry": "not a content object",
                   "entry traversal": "not a content object", "manifest traversal": "'..'",
                   "manifest absolute": "file \"/", "too many entries": "more than the limit of 10000",
                   "total over the cap": "passes the limits", "huge header": "larger than the limit",
                   "zero bomb": "larger than the limit", "wrong content": "does not match its sha256"}
        for what, status, message in refused:
            if what in reasons:
                assert reasons[what] in message, (what, message)
        # an archive that is not there: refused, and never read as "the
        # checkpoint has no such file" (which would delete it)
        db("UPDATE checkpoints SET archive = '%s/%s.tar.zst', sha256 = '%s' WHERE id = %d"
           % ("f" * 2, "f" * 64, "f" * 64, c0["id"]))
        for path in ("x.txt", "index.html"):
            r = request("POST", ck(aid, "/%d/revert-file" % c0["id"]), {"path": path}, token=tok)
            assert 400 <= r.status < 500, (path, r)
        expect_error(request("POST", ck(aid, "/%d/restore" % c0["id"]), {}, token=tok), 422)
        assert workspace_files(aid) == current_ws
        assert app_row(tok, aid)["draft_revision_id"] == draft
        # a row whose archive was swapped for another valid one: the sha256 in
        # the row no longer matches
        name, digest = _plant(ok_start().add(obj, good["index.html"]).bytes())
        planted.append(name)
        db("UPDATE checkpoints SET archive = '%s', sha256 = '%s' WHERE id = %d" % (name, orig[1], c0["id"]))
        r = request("POST", ck(aid, "/%d/restore" % c0["id"]), {}, token=tok)
        assert 400 <= r.status < 500, r
        assert workspace_files(aid) == current_ws
        # control: the same hand-made archive, named honestly, restores, so
        # the refusals above were about hostility and not about the format
        db("UPDATE checkpoints SET archive = '%s', sha256 = '%s' WHERE id = %d" % (name, digest, c0["id"]))
        res = restore(tok, aid, c0["id"])
        assert workspace_files(aid) == dict(good, **deps) and draft_files(tok, aid) == good, res
    finally:
        db("UPDATE checkpoints SET archive = '%s', sha256 = '%s' WHERE id = %d" % (orig[0], orig[1], c0["id"]))
        for name in set(planted):
            if name not in [archive_of(c["id"])[0] for c in checkpoints(tok, aid)]:
                os.unlink(store_path(name))
    restore(tok, aid, c0["id"])
    assert workspace_files(aid) == dict(as_bytes({"index.html": "<h1>old</h1>"}), **deps)


# ---- kilnctl checkpoint verify / gc -----------------------------------------

def _verify():
    p = kilnctl_env("checkpoint", "verify")
    return p.returncode, p.stdout + p.stderr


def _age(names, seconds=7200):
    t = time.time() - seconds
    for n in names:
        os.utime(store_path(n), (t, t))


def test_kilnctl_checkpoint_verify_and_gc():
    tok = org()
    rc, out = _verify()
    assert rc == 0 and " 0 bad" in out, out
    # verify reports a row whose archive is gone
    aid = make_app(tok, {"a.txt": unique("first")})
    upload(tok, aid, {"b.txt": unique("second")})
    upload(tok, aid, {"c.txt": unique("third")})
    c3, c2, c1 = checkpoints(tok, aid)
    name2 = archive_of(c2["id"])[0]
    os.rename(store_path(name2), store_path(name2) + ".away")
    try:
        rc, out = _verify()
        assert rc == 1 and ("BAD checkpoint %d " % c2["id"]) in out, out
        assert ("BAD checkpoint %d " % c1["id"]) not in out, out
    finally:
        os.rename(store_path(name2) + ".away", store_path(name2))
    rc, out = _verify()
    assert rc == 0, out

    # gc: archives of a deleted app go (once past the grace period)
    gone = make_app(tok, {"z.txt": unique("doomed")})
    upload(tok, gone, {"y.txt": unique("doomed too")})
    gone_names = [archive_of(c["id"])[0] for c in checkpoints(tok, gone)]
    assert request("DELETE", api(gone), token=tok).status == 204
    _age(gone_names)
    # retention: keep the newest per app, the draft's and the published one
    rev1 = c1["revision_id"]
    pub = post(api(aid, "/publish"), {"revision_id": rev1}, tok)
    assert pub["publish"]["revision_id"] == rev1
    mine = [archive_of(c["id"])[0] for c in (c1, c2, c3)]
    _age(mine)
    p = kilnctl_env("checkpoint", "gc", "--dry-run",
                    env={"KILN_CHECKPOINT_MAX_AGE_DAYS": "0", "KILN_CHECKPOINT_KEEP_NEWEST": "1"})
    assert p.returncode == 0 and "dry run" in p.stdout, p.stdout + p.stderr
    assert all(os.path.exists(store_path(n)) for n in gone_names + mine)
    assert len(checkpoints(tok, aid)) == 3
    p = kilnctl_env("checkpoint", "gc", env={"KILN_CHECKPOINT_MAX_AGE_DAYS": "0", "KILN_CHECKPOINT_KEEP_NEWEST": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    left = checkpoints(tok, aid)
    assert [c["id"] for c in left] == [c3["id"], c1["id"]], left
    assert get(api(aid, "/revisions/%d" % c2["revision_id"]), tok)["checkpoint_id"] is None
    assert not any(os.path.exists(store_path(n)) for n in gone_names), gone_names
    assert not os.path.exists(store_path(mine[1]))
    assert os.path.exists(store_path(mine[0])) and os.path.exists(store_path(mine[2]))
    rc, out = _verify()
    assert rc == 0, out
    # what is left still restores, and the old revision can still be read
    # (its manifest) but not restored or published from files it no longer has
    restore(tok, aid, c1["id"])
    assert workspace_files(aid) == revision_files(tok, aid, rev1)
    restore(tok, aid, c3["id"])
    p = kilnctl_env("checkpoint", "gc")
    assert p.returncode == 0, p.stdout + p.stderr


# ---- crash safety: kill -9 of the API worker in the middle of a restore ------

def _api_children():
    master = int(open(os.path.join(ENV["KILN_STATE"], "run", "kiln-api.pid")).read())
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _lock_holder(aid):
    lock = os.path.realpath(os.path.join(ENV["KILN_STATE"], "locks", "app-%d.lock" % aid))
    for pid in _api_children():
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == lock:
                    return pid
        except OSError:
            continue
    return None


def _two_trees(seed, n, sizes, every):
    """Trees A and B of n pages each; B also changes every `every`-th page of A."""
    rnd = random.Random(seed)
    tree_a = {"pages/a%03d.html" % i: "<p>A %d %s</p>\n" % (i, "a" * rnd.randrange(*sizes)) for i in range(n)}
    tree_b = {"pages/b%03d.html" % i: "<p>B %d %s</p>\n" % (i, "b" * rnd.randrange(*sizes)) for i in range(n)}
    tree_b.update({"pages/a%03d.html" % i: "<p>changed %d</p>\n" % i for i in range(0, n, every)})
    return tree_a, tree_b


def test_kill_9_during_restore_leaves_old_or_new_tree():
    tok = org()
    tree_a, tree_b = _two_trees(7, 300, (200, 3000), 3)
    aid = make_app(tok, tree_a)
    upload(tok, aid, tree_b)
    cb, ca = checkpoints(tok, aid)
    trees = {ca["id"]: as_bytes(tree_a), cb["id"]: as_bytes(tree_b)}
    assert workspace_files(aid) == trees[cb["id"]]
    t0 = time.time()
    restore(tok, aid, ca["id"])
    took = time.time() - t0
    assert workspace_files(aid) == trees[ca["id"]]
    current = ca["id"]
    kills = 0
    # kill points spread over the whole restore: extraction, swap, recording
    for attempt, fraction in enumerate((0.15, 0.4, 0.6, 0.75, 0.9, 1.05, 1.3)):
        target = cb["id"] if current == ca["id"] else ca["id"]
        result = {}

        def go():
            try:
                result["r"] = request("POST", ck(aid, "/%d/restore" % target), {}, token=tok, timeout=60)
            except Exception as e:  # the worker died under the request
                result["r"] = e
        th = threading.Thread(target=go)
        th.start()
        holder = None
        deadline = time.time() + 10
        while holder is None and th.is_alive() and time.time() < deadline:
            holder = _lock_holder(aid)
        if holder:
            time.sleep(took * fraction)
            try:
                os.kill(holder, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        th.join()
        ws = workspace_files(aid)
        assert ws in (trees[ca["id"]], trees[cb["id"]]), (attempt, len(ws), result)
        current = ca["id"] if ws == trees[ca["id"]] else cb["id"]
        eventually(lambda: request("GET", api(aid), token=tok).status == 200, what="API back")
    assert kills >= 3, kills
    rc, out = _verify()
    assert rc == 0, out
    # the app is usable afterwards: a normal restore, and the lock is free
    target = cb["id"] if current == ca["id"] else ca["id"]
    eventually(lambda: request("POST", ck(aid, "/%d/restore" % target), {}, token=tok).status == 200,
               timeout=10, what="a restore after the crashes")
    assert workspace_files(aid) == trees[target] == draft_files(tok, aid)
    # staging folders of killed restores do not pile up
    leftovers = [n for n in os.listdir(os.path.join(ENV["KILN_STATE"], "workspaces"))
                 if n.startswith(".restore-%d-" % aid)]
    assert not leftovers, leftovers


# ---- crash safety: every numbered point of checkpoint creation and restore ---
#
# A crash point (KILN_CRASH_POINT=<op>:<n>, docs/CHECKPOINTS.md) makes the
# API worker SIGKILL itself when it gets there; the statements of the
# database transaction are reached by holding a lock the statement needs
# from another session and killing the worker while it waits. After each
# kill: `kilnctl checkpoint verify` is clean, the workspace is exactly the old
# or the new tree, and the rows say which.

CREATE_POINTS = ["ckpt_write:%d" % n for n in range(1, 17)]
RESTORE_POINTS = (["restore:1", "restore:2"] + ["ckpt_extract:%d" % n for n in range(1, 10)] +
                  ["ckpt_swap_into:%d" % n for n in range(1, 11)] + ["restore:3"] +
                  ["ckpt_write:%d" % n for n in range(1, 17)] + ["ckpt_record:1"])
# a restore's workspace holds the tree before the exchange, the new one after
RESTORE_SWAPPED_FROM = RESTORE_POINTS.index("ckpt_swap_into:6")


class _DbLock:
    """A MariaDB session holding a lock (taken by sql) until release()."""

    def __init__(self, sql, release):
        sock = os.path.join(ENV["KILN_STATE"], "run", "mysql.sock")
        self.release_sql = release
        self.p = subprocess.Popen(["mariadb", "--no-defaults", "-S", sock, "-u", "root", "-N", "-B", "-n", "kiln"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.p.stdin.write(sql + "; SELECT 'locked';\n")
        self.p.stdin.flush()
        while self.p.stdout.readline().strip() != "locked":
            assert self.p.poll() is None, "the locking session ended"

    def release(self):
        self.p.stdin.write(self.release_sql + ";\n")
        self.p.stdin.close()
        self.p.wait(timeout=30)


def _max_id(table):
    return int(db("SELECT COALESCE(MAX(id), 0) FROM %s" % table)[0][0])


# (what the worker is doing, the lock that stops it there, the statement it
# waits in): the last read before the manifest build, then the writes of the
# revision + checkpoint + draft pointer transaction in order
DB_WAITS = [
    ("reading the latest checkpoint", lambda aid: ("LOCK TABLES checkpoints WRITE", "UNLOCK TABLES"),
     "SELECT id, app_id, run_id, revision_id, type, label, summary, archive, sha256"),
    ("inserting the revision row",
     lambda aid: ("BEGIN; SELECT id FROM app_revisions WHERE id > %d LOCK IN SHARE MODE" % _max_id("app_revisions"),
                  "ROLLBACK"), "INSERT INTO app_revisions"),
    ("inserting the checkpoint row",
     lambda aid: ("BEGIN; SELECT id FROM checkpoints WHERE id > %d LOCK IN SHARE MODE" % _max_id("checkpoints"),
                  "ROLLBACK"), "INSERT INTO checkpoints"),
    ("moving the draft pointer",
     lambda aid: ("BEGIN; SELECT id FROM apps WHERE id = %d LOCK IN SHARE MODE" % aid, "ROLLBACK"),
     "UPDATE apps SET draft_revision_id"),
]


def _waiting_in(statement):
    rows = db("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'kiln' AND INFO LIKE '%s%%'"
              % statement)
    return rows[0][0] != "0"


def _background(method, path, body, tok):
    """Sends a request in a thread; join() gives the response or the error."""
    result = {}

    def go():
        try:
            result["r"] = request(method, path, body, token=tok, timeout=60)
        except Exception as e:  # the worker died under the request
            result["r"] = e
    th = threading.Thread(target=go)
    th.start()
    return th, result


def _worker_kills():
    """SIGKILLed API workers the master has reaped so far."""
    with open(os.path.join(ENV["KILN_STATE"], "log", "kiln-api.log"), errors="replace") as fh:
        return sum("killed by signal 9" in line for line in fh)


def _died(r, kills_before, where):
    """nginx answers 503 when the worker dies under the request."""
    assert not isinstance(r, Exception) and r.status == 503, (where, r)
    eventually(lambda: _worker_kills() > kills_before, timeout=10, what="the master to reap the worker")


def _crash_with_point(point, method, path, body, tok):
    """The request, answered by workers armed with point: it must die there."""
    api_restart(KILN_CRASH_POINT=point)
    kills = _worker_kills()
    try:
        r = request(method, path, body, token=tok, timeout=60)
        _died(r, kills, "crash point %s not reached" % point)
    finally:
        api_restart()


def _crash_in_statement(what, aid, method, path, body, tok):
    """The request, its worker killed while it waits in a database statement."""
    lock_sql, release_sql, statement = what[1](aid) + (what[2],)
    kills = _worker_kills()
    lock = _DbLock(lock_sql, release_sql)
    try:
        th, result = _background(method, path, body, tok)
        eventually(lambda: _waiting_in(statement), timeout=30, interval=0.05, what="a worker " + what[0])
        holder = _lock_holder(aid)
        assert holder, "no worker holds app %d's lock" % aid
        os.kill(holder, signal.SIGKILL)
    finally:
        lock.release()
    th.join()
    _died(result["r"], kills, what[0])


def _verify_app(aid):
    p = kilnctl_env("checkpoint", "verify", "--app", str(aid))
    assert p.returncode == 0 and " 0 bad" in p.stdout, p.stdout + p.stderr


def _store_tmp_empty():
    return os.listdir(os.path.join(ENV["KILN_STATE"], "checkpoints", "tmp")) == []


def test_kill_at_every_point_of_checkpoint_creation():
    tok = org()

    def tree(k):
        rnd = random.Random(k)
        files = {"pages/p%02d.html" % i: "<p>%d %s</p>\n" % (i, "x" * rnd.randrange(100, 2000)) for i in range(40)}
        files.update({"v.txt": "version %d\n" % k, "css/site-%d.css" % (k % 3): "a { color: #%06d }\n" % k})
        return files
    aid = make_app(tok, tree(0))
    points = [(p, None) for p in CREATE_POINTS] + [(None, w) for w in DB_WAITS]
    killed = 0
    for k, (point, wait) in enumerate(points, start=1):
        before = app_row(tok, aid)["draft_revision_id"]
        n_ck = len(checkpoints(tok, aid))
        new = as_bytes(tree(k))
        body = {"files": {p: v.decode() for p, v in new.items()}}
        if point:
            _crash_with_point(point, "POST", api(aid, "/revisions"), body, tok)
        else:
            _crash_in_statement(wait, aid, "POST", api(aid, "/revisions"), body, tok)
        killed += 1
        where = point or wait[0]
        # nothing committed: the draft and the checkpoints are as before,
        # and every archive a row names is whole
        _verify_app(aid)
        assert app_row(tok, aid)["draft_revision_id"] == before, where
        assert len(checkpoints(tok, aid)) == n_ck, where
        # the upload had written its files before the snapshot: the
        # workspace is exactly the new tree
        assert workspace_files(aid) == new, where
        # a temp archive the crash left is gone once the store is reopened
        assert _store_tmp_empty(), (where, os.listdir(os.path.join(ENV["KILN_STATE"], "checkpoints", "tmp")))
    assert killed == len(CREATE_POINTS) + len(DB_WAITS) >= 20, killed
    # the app is whole afterwards: an upload records, and restores back
    final = upload(tok, aid, tree(99))
    assert revision_files(tok, aid, final["id"]) == as_bytes(tree(99)) == workspace_files(aid)
    first = checkpoints(tok, aid)[-1]
    restore(tok, aid, first["id"])
    assert workspace_files(aid) == as_bytes(tree(0)) == draft_files(tok, aid)
    rc, out = _verify()
    assert rc == 0, out


def _staged(aid):
    return [n for n in os.listdir(os.path.join(ENV["KILN_STATE"], "workspaces")) if n.startswith(".upload-%d-" % aid)]


def test_upload_cut_short_by_a_crash_is_completed_by_the_next_writer():
    """A worker killed in the middle of an upload's renames leaves a mixed
    workspace only until the next writer takes the app's lock: an upload or
    a run first completes the interrupted one from its journal (ws_txn.h),
    so it starts from the whole new set, never from a mix."""
    tok = org()

    def tree(k):
        files = {"pages/p%02d.html" % i: "<p>%d version %d</p>\n" % (i, k) for i in range(30)}
        files["v%d.txt" % k] = "only in version %d\n" % k
        return files
    aid = make_app(tok, tree(0))
    for k, (point, next_writer) in enumerate([("ws_txn_apply:2", "upload"), ("ws_txn_apply:3", "upload"),
                                              ("ws_txn_apply:3", "run")], start=1):
        before = app_row(tok, aid)["draft_revision_id"]
        old, new = workspace_files(aid), as_bytes(tree(k))
        _crash_with_point(point, "POST", api(aid, "/revisions"), {"files": tree(k)}, tok)
        where = "%s, then a %s" % (point, next_writer)
        assert app_row(tok, aid)["draft_revision_id"] == before, where
        assert len(_staged(aid)) == 1, (where, "the crash left its staging folder")
        mixed = workspace_files(aid)
        assert mixed != old and mixed != new, (where, "the crash point is in the middle of the renames")
        if next_writer == "upload":
            extra = upload(tok, aid, {"extra-%d.txt" % k: "added after the crash\n"}, replace=False)
            new["extra-%d.txt" % k] = b"added after the crash\n"
            assert revision_files(tok, aid, extra["id"]) == new, where
        else:
            run = start_run(tok, aid, "hello")
            assert wait_run(tok, aid, run["id"])["status"] == "completed", where
            # the completed upload was recorded before the run, as any
            # change made outside a run is
            assert draft_files(tok, aid) == new, where
        assert workspace_files(aid) == new, where
        assert _staged(aid) == [], where
    _verify_app(aid)


def _held(aid):
    return [n for n in os.listdir(os.path.join(ENV["KILN_STATE"], "workspaces")) if n.startswith(".kept-%d-" % aid)]


def _tracked(files):
    return {p: v for p, v in files.items() if not p.startswith(("node_modules/", "web/node_modules/", ".git/"))}


def test_kill_at_every_point_of_restore():
    tok = org()
    tree_a, tree_b = _two_trees(5, 40, (100, 2000), 4)
    tree_c = {"other.html": "<p>C</p>\n"}
    aid = make_app(tok, tree_a)
    upload(tok, aid, tree_b)
    # the newest checkpoint, which each restore's own checkpoint is based
    # on, shares nothing with A or B: every restore stores contents anew
    upload(tok, aid, tree_c)
    cc, cb, ca = checkpoints(tok, aid)
    trees = {ca["id"]: as_bytes(tree_a), cb["id"]: as_bytes(tree_b), cc["id"]: as_bytes(tree_c)}
    # folders no checkpoint holds, which every restore keeps
    kept = {"node_modules/pkg/index.js": b"module.exports = 1;\n", "node_modules/.package-lock.json": b"{}",
            "web/node_modules/lib.js": b"lib\n", ".git/HEAD": b"ref: refs/heads/main\n"}
    for p, v in kept.items():
        os.makedirs(os.path.dirname(os.path.join(workspace_dir(aid), p)), exist_ok=True)
        with open(os.path.join(workspace_dir(aid), p), "wb") as fh:
            fh.write(v)
    current = cc["id"]
    points = ([(p, None) for p in RESTORE_POINTS[:RESTORE_POINTS.index("ckpt_record:1")]] +
              [(None, w) for w in DB_WAITS[1:]] + [("ckpt_record:1", None)])
    for k, (point, wait) in enumerate(points):
        target = cb["id"] if current == ca["id"] else ca["id"]
        draft = app_row(tok, aid)["draft_revision_id"]
        n_ck = len(checkpoints(tok, aid))
        if point:
            _crash_with_point(point, "POST", ck(aid, "/%d/restore" % target), {}, tok)
        else:
            _crash_in_statement(wait, aid, "POST", ck(aid, "/%d/restore" % target), {}, tok)
        where = point or wait[0]
        swapped = (point is None or point == "ckpt_record:1" or
                   RESTORE_POINTS.index(point) >= RESTORE_SWAPPED_FROM)
        want = target if swapped else current
        # the tracked files are exactly one tree, never a mix; the kept
        # folders are in the workspace or held beside it until the next
        # restore call puts them back
        ws = workspace_files(aid)
        assert _tracked(ws) == trees[want], (where, sorted(set(ws) ^ set(trees[want]))[:5])
        assert all(ws.get(p) == v for p, v in kept.items()) or _held(aid), where
        _verify_app(aid)
        # the rows: committed only when the crash came after the commit
        committed = point == "ckpt_record:1"
        after = app_row(tok, aid)["draft_revision_id"]
        if committed:
            assert after != draft and revision_files(tok, aid, after) == trees[target], where
            assert len(checkpoints(tok, aid)) == n_ck + 1, where
        else:
            assert after == draft and len(checkpoints(tok, aid)) == n_ck, where
        assert _store_tmp_empty(), where
        # the next restore call (a dry run here) finds the workspace whole
        d = restore(tok, aid, target, {"dry_run": True})
        assert workspace_files(aid) == dict(trees[want], **kept), where
        assert sorted(d["kept"]) == [".git", "node_modules", "web/node_modules"], (where, d)
        assert not _held(aid), where
        current = want
    assert len(points) >= 20, len(points)
    # a normal restore afterwards, and no staging or holding folder is left
    target = cb["id"] if current == ca["id"] else ca["id"]
    res = restore(tok, aid, target)
    assert sorted(res["kept"]) == [".git", "node_modules", "web/node_modules"], res
    assert workspace_files(aid) == dict(trees[target], **kept)
    assert _tracked(workspace_files(aid)) == draft_files(tok, aid)
    left = [n for n in os.listdir(os.path.join(ENV["KILN_STATE"], "workspaces"))
            if n.startswith((".restore-%d-" % aid, ".kept-%d-" % aid))]
    assert not left, left
    rc, out = _verify()
    assert rc == 0, out
