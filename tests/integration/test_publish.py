"""Publish and preview through nginx: files published as they are, rollback
to an older revision, a package.json build run in the sandbox (npm), a
failing build that leaves the live site alone, and signed draft previews
that refuse tampered, expired and path-traversing URLs."""

import hashlib
import hmac
import json
import os
import threading
import time

from kiln_test import ENV, api_restart, expect_error, new_org, request, unique

ORG = {}


def org():
    if not ORG:
        ORG["slug"], ORG["token"] = new_org()
    return ORG["token"]


def api(aid, rest=""):
    return "/admin/apps/%d%s" % (aid, rest)


def make_app(tok, files=None):
    s = unique("pub")
    r = request("POST", "/admin/apps", {"name": "App " + s, "slug": s}, token=tok)
    assert r.status == 201, r
    app = r.json()
    if files:
        upload(tok, app["id"], files)
    return app["id"]


def upload(tok, aid, files, replace=True):
    r = request("POST", api(aid, "/revisions"), {"files": files, "replace": replace}, token=tok)
    assert r.status == 201, r
    return r.json()


def app_row(tok, aid):
    r = request("GET", api(aid), token=tok)
    assert r.status == 200, r
    return r.json()


def publish(tok, aid, body=None, status=200):
    r = request("POST", api(aid, "/publish"), body or {}, token=tok, timeout=200)
    assert r.status == status, r
    return r.json()


def site_path(url):
    """The path part of a publish URL (it names this stack's nginx)."""
    assert url.startswith(ENV["KILN_URL"] + "/sites/"), url
    return url[len(ENV["KILN_URL"]):]


def fetch(path):
    return request("GET", path)


def published_dir(org_slug, app_slug):
    return os.path.join(ENV["KILN_STATE"], "published", org_slug, app_slug, "current")


# ---- publish -------------------------------------------------------------------

def test_publish_serves_files_as_they_are_and_rolls_back():
    tok = org()
    v1 = {"index.html": "<h1>version one</h1>", "about/index.html": "<p>about one</p>",
          "style.css": "h1 { color: teal }\n"}
    aid = make_app(tok, v1)
    app = app_row(tok, aid)
    rev1 = app["draft_revision_id"]
    assert app["published_revision_id"] is None and app["publish_url"], app
    base = site_path(app["publish_url"])
    assert fetch(base).status == 404

    p1 = publish(tok, aid)["publish"]
    assert p1["revision_id"] == rev1 and p1["built"] is False and p1["url"] == app["publish_url"], p1
    assert len(p1["artifact_sha256"]) == 64 and p1["created_at"].endswith("Z") and p1["id"], p1
    r = fetch(base)
    assert r.status == 200 and r.body == b"<h1>version one</h1>", r
    assert r.header("Content-Type").startswith("text/html"), r.header("Content-Type")
    assert fetch(base + "about/").body == b"<p>about one</p>"
    r = fetch(base + "style.css")
    assert r.body == b"h1 { color: teal }\n" and r.header("Content-Type").startswith("text/css"), r
    assert fetch(base + "missing.html").status == 404
    assert app_row(tok, aid)["published_revision_id"] == rev1

    # a new draft is not live until published
    rev2 = upload(tok, aid, {"index.html": "<h1>version two</h1>", "style.css": "h1 { color: red }\n"})["id"]
    assert fetch(base).body == b"<h1>version one</h1>"
    p2 = publish(tok, aid)["publish"]
    assert p2["revision_id"] == rev2 and p2["artifact_sha256"] != p1["artifact_sha256"], p2
    assert fetch(base).body == b"<h1>version two</h1>"
    assert fetch(base + "about/").status == 404  # the new version has no about page
    # rollback: publish the older revision again
    p3 = publish(tok, aid, {"revision_id": rev1})["publish"]
    assert p3["revision_id"] == rev1 and p3["artifact_sha256"] == p1["artifact_sha256"], p3
    assert fetch(base).body == b"<h1>version one</h1>" and fetch(base + "about/").body == b"<p>about one</p>"
    app = app_row(tok, aid)
    assert app["published_revision_id"] == rev1 and app["draft_revision_id"] == rev2, app

    r = request("GET", api(aid, "/publishes"), token=tok)
    assert r.status == 200, r
    items = r.json()["items"]
    assert [(p["id"], p["revision_id"]) for p in items] == \
        [(p3["id"], rev1), (p2["id"], rev2), (p1["id"], rev1)], items
    assert all(p["url"] == app["publish_url"] for p in items)
    page = request("GET", api(aid, "/publishes?limit=1"), token=tok).json()
    assert len(page["items"]) == 1 and page["next_cursor"], page

    # refusals leave the live version alone
    expect_error(request("POST", api(aid, "/publish"), {"revision_id": 99999999}, token=tok), 422)
    expect_error(request("POST", api(aid, "/publish"), {"revision_id": "x"}, token=tok), 422)
    other = make_app(tok, {"index.html": "other"})
    other_rev = app_row(tok, other)["draft_revision_id"]
    expect_error(request("POST", api(aid, "/publish"), {"revision_id": other_rev}, token=tok), 422)
    expect_error(request("POST", api(make_app(tok), "/publish"), {}, token=tok), 409)
    _, stranger = new_org()
    expect_error(request("POST", api(aid, "/publish"), {}, token=stranger), 404)
    expect_error(request("GET", api(aid, "/publishes"), token=stranger), 404)
    assert fetch(base).body == b"<h1>version one</h1>"
    assert app_row(tok, aid)["published_revision_id"] == rev1


def test_concurrent_publishes_of_one_revision_all_succeed():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>same tree</h1>", "a.css": "a{}"})
    base = site_path(app_row(tok, aid)["publish_url"])
    results = []

    def go():
        r = request("POST", api(aid, "/publish"), {}, token=tok, timeout=60)
        results.append((r.status, r.json().get("publish", {}).get("artifact_sha256")))
    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [st for st, _ in results] == [200] * 6, results
    assert len({h for _, h in results}) == 1, results
    assert fetch(base).body == b"<h1>same tree</h1>"
    assert len(request("GET", api(aid, "/publishes"), token=tok).json()["items"]) == 6


def _serving(org_slug, app_slug):
    """The tree `current` points at, or None."""
    try:
        return os.readlink(published_dir(org_slug, app_slug))
    except FileNotFoundError:
        return None


def _latest_publish(aid):
    r = request("GET", api(aid, "/publishes?limit=1"), token=org())
    items = r.json()["items"]
    return items[0] if items else None


def _assert_consistent(tok, aid, base):
    """`current`, the newest publish row and published_revision_id agree,
    and the site serves that revision's files."""
    app = app_row(tok, aid)
    last = _latest_publish(aid)
    assert last and app["published_revision_id"] == last["revision_id"], (app, last)
    want = "%d-%s" % (last["revision_id"], last["artifact_sha256"][:12])
    assert _serving(ORG["slug"], app["slug"]) == want, (_serving(ORG["slug"], app["slug"]), want)
    r = request("GET", api(aid, "/revisions/%d/files/index.html" % last["revision_id"]), token=tok)
    assert fetch(base).body == r.body, (fetch(base), r)
    return last


def test_concurrent_publishes_of_different_revisions_stay_consistent():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>r0</h1>"})
    revs = [app_row(tok, aid)["draft_revision_id"]]
    for i in range(1, 5):
        revs.append(upload(tok, aid, {"index.html": "<h1>r%d</h1>" % i})["id"])
    base = site_path(app_row(tok, aid)["publish_url"])
    for _ in range(3):
        results = []

        def go(rev):
            r = request("POST", api(aid, "/publish"), {"revision_id": rev}, token=tok, timeout=120)
            results.append((rev, r.status))
        threads = [threading.Thread(target=go, args=(rev,)) for rev in revs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # serialised, not refused: each waited its turn
        assert sorted(st for _, st in results) == [200] * len(revs), results
        _assert_consistent(tok, aid, base)


def test_a_crash_at_any_step_of_publish_leaves_it_consistent_or_healed_by_the_next():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>first</h1>"})
    app = app_row(tok, aid)
    base = site_path(app["publish_url"])
    publish(tok, aid)
    for point in ("publish:1", "publish:2", "publish:3", "publish:4"):
        rev = upload(tok, aid, {"index.html": "<h1>%s</h1>" % point})["id"]
        before = _latest_publish(aid)
        api_restart(KILN_CRASH_POINT=point)
        try:
            r = request("POST", api(aid, "/publish"), {}, token=tok, timeout=120)
        finally:
            api_restart()
        assert r.status == 503, (point, r)  # the worker died under it
        last = _latest_publish(aid)
        if point in ("publish:1", "publish:2"):
            # nothing recorded: the old version serves, all agree
            assert last["id"] == before["id"], point
            _assert_consistent(tok, aid, base)
        elif point == "publish:3":
            # recorded, not switched: the database is one publish ahead
            assert last["revision_id"] == rev and app_row(tok, aid)["published_revision_id"] == rev
            assert _serving(ORG["slug"], app["slug"]).startswith("%d-" % before["revision_id"])
            # a publish that then fails still puts the site right first
            upload(tok, aid, {"index.html": "<h1>broken</h1>", "package.json": _package("node nope.js")})
            expect_error(request("POST", api(aid, "/publish"), {}, token=tok, timeout=120), 422, "build_failed")
            assert _assert_consistent(tok, aid, base)["revision_id"] == rev
            assert fetch(base).body == ("<h1>%s</h1>" % point).encode()
        else:
            assert last["revision_id"] == rev, point
            _assert_consistent(tok, aid, base)
        # and the next publish is whole
        publish(tok, aid, {"revision_id": rev})
        _assert_consistent(tok, aid, base)
    builds = os.path.join(ENV["KILN_STATE"], "builds")
    leftovers = [n for n in os.listdir(builds) if n.startswith("%d-" % aid)]
    assert len(leftovers) <= 2, leftovers  # removed by the next publish once an hour old


BUILD_JS = r"""
const fs = require('fs');
const title = fs.readFileSync('src/title.txt', 'utf8').trim();
fs.mkdirSync('dist/assets', { recursive: true });
fs.writeFileSync('dist/index.html', '<h1>' + title + '</h1><script src="assets/app.js"></script>');
fs.writeFileSync('dist/assets/app.js', 'console.log(' + JSON.stringify(title) + ');\n');
// what a hostile build could leave behind in its output
try { fs.symlinkSync('/etc/passwd', 'dist/passwd.txt'); } catch (e) { console.log('no symlink: ' + e.code); }
try { fs.symlinkSync('/etc', 'dist/etc'); } catch (e) { console.log('no symlink: ' + e.code); }
console.log('built ' + title + ' as uid ' + process.getuid());
"""


def _package(script):
    return json.dumps({"name": "site", "version": "1.0.0", "private": True, "scripts": {"build": script}})


def test_publish_runs_the_build_script_in_the_sandbox():
    tok = org()
    files = {"package.json": _package("node build.js"), "build.js": BUILD_JS, "src/title.txt": "Built by npm\n",
             "index.html": "<h1>source, not the build</h1>"}
    aid = make_app(tok, files)
    app = app_row(tok, aid)
    base = site_path(app["publish_url"])
    t0 = time.time()
    p = publish(tok, aid)["publish"]
    took = time.time() - t0
    assert p["built"] is True and p["revision_id"] == app["draft_revision_id"], p
    r = fetch(base)
    assert r.status == 200 and r.body == b'<h1>Built by npm</h1><script src="assets/app.js"></script>', r
    assert fetch(base + "assets/app.js").body == b'console.log("Built by npm");\n'
    # nothing the build left besides plain files is published
    for leak in ("passwd.txt", "etc/passwd", "etc/hostname", "build.js", "package.json"):
        r = fetch(base + leak)
        assert r.status == 404 and b"root:" not in r.body, (leak, r)
    # the published tree belongs to Kiln, not to the sandbox user
    root = published_dir(ORG["slug"], app["slug"])
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            st = os.lstat(os.path.join(d, n))
            assert st.st_uid == os.getuid() and not os.path.islink(os.path.join(d, n)), (n, st.st_uid)
    assert sorted(os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns) == \
        ["assets/app.js", "index.html"]
    # the workspace (draft) is untouched by the build
    r = request("GET", api(aid, "/revisions/%d/files/index.html" % app["draft_revision_id"]), token=tok)
    assert r.body == b"<h1>source, not the build</h1>"
    ws = os.path.join(ENV["KILN_STATE"], "workspaces", str(aid))
    assert not os.path.exists(os.path.join(ws, "dist")), os.listdir(ws)
    assert took < 60, took


def test_failed_build_is_422_and_the_live_version_keeps_serving():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>live</h1>"})
    app = app_row(tok, aid)
    base = site_path(app["publish_url"])
    live = publish(tok, aid)["publish"]
    assert fetch(base).body == b"<h1>live</h1>"
    failing = {
        "exit status": ({"package.json": _package("node fail.js"),
                         "fail.js": "console.error('boom: the build broke'); process.exit(3);\n"},
                        ["boom: the build broke", "3"]),
        "no output folder": ({"package.json": _package("node -e \"console.log('made nothing')\"")},
                             ["made nothing", "dist"]),
        "output is a symlink": ({"package.json": _package("node link.js"),
                                 "link.js": "require('fs').symlinkSync('/etc', 'dist');\n"}, ["dist"]),
        "output is a file": ({"package.json": _package("node file.js"),
                              "file.js": "require('fs').writeFileSync('dist', 'x');\n"}, ["dist"]),
        "not json": ({"package.json": "{\"scripts\": {\"build\": "}, None),
    }
    for what, (files, words) in failing.items():
        files = dict(files, **{"index.html": "<h1>broken draft</h1>"})
        upload(tok, aid, files)
        r = request("POST", api(aid, "/publish"), {}, token=tok, timeout=200)
        if words is None:
            # package.json that is not JSON has no build script: published as is
            assert r.status == 200 and r.json()["publish"]["built"] is False, (what, r)
            assert fetch(base).body == b"<h1>broken draft</h1>"
            live = r.json()["publish"]
            continue
        err = expect_error(r, 422, "build_failed")
        assert isinstance(err.get("log"), str), (what, err)
        for w in words:
            assert w in err["log"], (what, err)
        assert fetch(base).body == b"<h1>live</h1>", what
        assert app_row(tok, aid)["published_revision_id"] == live["revision_id"], what
        items = request("GET", api(aid, "/publishes"), token=tok).json()["items"]
        assert items[0]["id"] == live["id"], (what, items)
    builds = os.path.join(ENV["KILN_STATE"], "builds")
    assert not [n for n in os.listdir(builds) if n.startswith("%d-" % aid)], os.listdir(builds)


def test_a_build_that_needs_packages_is_refused_as_dependencies_missing():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>live</h1>"})
    base = site_path(app_row(tok, aid)["publish_url"])
    live = publish(tok, aid)["publish"]
    pkg = {"name": "site", "version": "1.0.0", "scripts": {"build": "vite build"},
           "dependencies": {"react": "^18.2.0"}, "devDependencies": {"vite": "^5.0.0"}}
    upload(tok, aid, {"package.json": json.dumps(pkg), "index.html": "<h1>needs vite</h1>"})
    # even with node_modules in the live workspace: builds never use it
    ws = os.path.join(ENV["KILN_STATE"], "workspaces", str(aid), "node_modules", "vite")
    os.makedirs(ws)
    t0 = time.time()
    err = expect_error(request("POST", api(aid, "/publish"), {}, token=tok, timeout=120), 422,
                       "dependencies_missing")
    assert time.time() - t0 < 10  # refused up front, no sandbox run
    assert err["packages"] == ["react", "vite"], err
    assert "react, vite" in err["message"] and "node_modules" in err["message"], err
    assert fetch(base).body == b"<h1>live</h1>"
    assert app_row(tok, aid)["published_revision_id"] == live["revision_id"]
    # a build script with no packages still builds
    pkg = {"name": "site", "version": "1.0.0", "scripts": {"build": "node build.js"}, "dependencies": {}}
    upload(tok, aid, {"package.json": json.dumps(pkg), "build.js": BUILD_JS, "src/title.txt": "No deps\n"})
    assert publish(tok, aid)["publish"]["built"] is True
    assert fetch(base).body.startswith(b"<h1>No deps</h1>")


# ---- preview --------------------------------------------------------------------

def _secret():
    with open(os.path.join(ENV["KILN_STATE"], "secret")) as fh:
        return bytes.fromhex(fh.read().strip()[:64])


def _sign(aid, expiry):
    return hmac.new(_secret(), ("preview:%d:%d" % (aid, expiry)).encode(), hashlib.sha256).hexdigest()


def test_preview_serves_the_draft_with_a_signed_expiring_url():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>draft one</h1>", "sub/page.html": "<p>page</p>"})
    r = request("GET", api(aid, "/preview"), token=tok)
    assert r.status == 200, r
    body = r.json()
    url = body["url"]
    _, kind, app_id, expiry, sig, rest = url.split("/")
    assert kind == "preview" and int(app_id) == aid and rest == "" and len(sig) == 64, url
    assert int(expiry) > time.time() and body["expires_in"] > 0, body
    r = fetch(url)
    assert r.status == 200 and r.body == b"<h1>draft one</h1>", r
    assert r.header("Cache-Control") == "no-store", r.headers
    assert fetch(url + "sub/page.html").body == b"<p>page</p>"
    assert fetch(url + "nope.html").status == 404
    # the preview is the live draft: an upload shows at once
    upload(tok, aid, {"index.html": "<h1>draft two</h1>"}, replace=False)
    assert fetch(url).body == b"<h1>draft two</h1>"

    # the signature is HMAC-SHA256(secret, "preview:<app>:<expiry>")
    assert _sign(aid, int(expiry)) == sig
    assert fetch("/preview/%d/%d/%s/" % (aid, int(expiry) + 60, _sign(aid, int(expiry) + 60))).status == 200
    # tampered, for another app, expired, missing
    flipped = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    assert fetch("/preview/%d/%s/%s/" % (aid, expiry, flipped)).status == 403
    assert fetch("/preview/%d/%s/%s/" % (aid, int(expiry) + 1, sig)).status == 403
    other = make_app(tok, {"index.html": "<h1>other app</h1>"})
    r = fetch("/preview/%d/%s/%s/" % (other, expiry, sig))
    assert r.status == 403 and b"other app" not in r.body, r
    past = int(time.time()) - 5
    assert fetch("/preview/%d/%d/%s/" % (aid, past, _sign(aid, past))).status == 403
    for bad in ("/preview/%d/%s/" % (aid, expiry), "/preview/%d/" % aid, "/preview/",
                "/preview/%d/%s/%s" % (aid, expiry, sig), "/preview/%d/%s/%s/" % (aid, expiry, sig.upper()),
                "/preview/%d/%s/%s/" % (aid, expiry, sig[:63]), "/preview/0%d/%s/%s/" % (aid, expiry, sig)):
        r = fetch(bad)
        assert r.status in (403, 404) or b"draft two" not in r.body, (bad, r)
        assert b"draft two" not in r.body, (bad, r)


def test_preview_never_serves_outside_the_signed_workspace():
    tok = org()
    aid = make_app(tok, {"index.html": "<h1>mine</h1>"})
    _, victim_tok = new_org()
    victim = make_app(victim_tok, {"index.html": "<h1>victim secret</h1>", "data.json": "{\"k\": \"victim\"}"})
    url = request("GET", api(aid, "/preview"), token=tok).json()["url"]
    _, _, _, expiry, sig, _ = url.split("/")
    state = ENV["KILN_STATE"]
    outside = os.path.join(state, "workspaces", "outside-%d.txt" % aid)
    with open(outside, "w") as fh:
        fh.write("outside secret")
    ws = os.path.join(state, "workspaces", str(aid))
    os.symlink("/etc/passwd", os.path.join(ws, "passwd.txt"))
    os.symlink(os.path.join(state, "workspaces", str(victim)), os.path.join(ws, "victim"))
    try:
        attempts = [
            url + "../../../%d/%s/%s/index.html" % (victim, expiry, sig),
            url + "%2e%2e/%2e%2e/%2e%2e/" + "%d/%s/%s/index.html" % (victim, expiry, sig),
            url + "..%2f..%2f..%2f" + "%d/%s/%s/index.html" % (victim, expiry, sig),
            url + "%2E%2E/%2E%2E/%2E%2E/" + "%d/%s/%s/data.json" % (victim, expiry, sig),
            url + "./../../../%d/%s/%s/index.html" % (victim, expiry, sig),
            url + "x/../../../../%d/%s/%s/index.html" % (victim, expiry, sig),
            url + "../outside-%d.txt" % aid,
            url + "../../outside-%d.txt" % aid,
            url + "../../../../secret",
            url + "../../../../../../etc/passwd",
            url + "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret",
            url + "passwd.txt",
            url + "victim/index.html",
            url + "victim/data.json",
            url + "..;/../../%d/%s/%s/index.html" % (victim, expiry, sig),
            url + "%00../index.html",
            url.replace("/%d/" % aid, "/%d/../%d/" % (aid, victim), 1) + "index.html",
        ]
        for path in attempts:
            r = fetch(path)
            for leak in (b"victim", b"outside secret", b"root:x:0:0"):
                assert leak not in r.body, (path, r)
            assert r.status != 500, (path, r)
        # the signed app's own files still come through
        assert fetch(url + "index.html").body == b"<h1>mine</h1>"
    finally:
        os.unlink(os.path.join(ws, "passwd.txt"))
        os.unlink(os.path.join(ws, "victim"))
        os.unlink(outside)
