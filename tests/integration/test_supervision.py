"""Supervision under saturation: a stop signal reaches a worker that never
goes idle (the next connection is always waiting), so a SIGHUP's old
generation is gone well before the master's kill deadline, and no request
fails on the way. wrk keeps every worker busy; a Python client loop cannot."""

import os
import re
import signal
import subprocess
import time

from kiln_test import ENV, new_org


def _api_children():
    master = int(open(os.path.join(ENV["KILN_STATE"], "run", "kiln-api.pid")).read())
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return master, {int(p) for p in out}


def test_sighup_under_saturation_retires_old_workers_promptly():
    _, token = new_org()
    url = "http://%s:%d/admin/apps?limit=1" % (ENV["host"], ENV["port"])
    wrk = subprocess.Popen(["wrk", "-t", "2", "-c", "48", "-d", "4s", "-H",
                            "Authorization: Bearer " + token, url],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        master, old = _api_children()
        os.kill(master, signal.SIGHUP)
        t0 = time.monotonic()
        # shutdown_grace_s is 10 s: an old worker still there after 2.5 s
        # did not see its stop signal and would be killed mid-request
        while old & _api_children()[1] and time.monotonic() - t0 < 2.5:
            time.sleep(0.05)
        still = old & _api_children()[1]
        out, _ = wrk.communicate(timeout=30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    assert not still, "old workers %s still serving 2.5 s after SIGHUP" % sorted(still)
    total = re.search(r"(\d+) requests in", out)
    assert total and int(total.group(1)) > 200, out
    assert "Non-2xx" not in out and "Socket errors" not in out, out
