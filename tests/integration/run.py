#!/usr/bin/env python3
"""Runs the integration tests against a running stack (tools/stack).

usage: run.py STACK_ENV_FILE [substring-of-test-name]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kiln_test  # noqa: E402


def main():
    kiln_test.load_env(sys.argv[1])
    kiln_test.ENV["ROOT"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    only = sys.argv[2] if len(sys.argv) > 2 else None
    names = sorted(f[:-3] for f in os.listdir(os.path.dirname(os.path.abspath(__file__)))
                   if f.startswith("test_") and f.endswith(".py"))
    modules = [__import__(n) for n in names]
    passed, failed = kiln_test.run_tests(modules, only)
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
