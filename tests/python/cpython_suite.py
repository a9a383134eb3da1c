"""CTest entry (py_cpython_suite): CPython 3.11's test_concurrent_futures
against zexec.Executor on a real zexec-broker with two Python workers
(zexec-pyworker --allow-pickle, three processes each). Passes when no test
fails and every ProcessPoolExecutor test has a zexec counterpart that
passed or is listed as not applicable (zexec_cpython_suite.py)."""

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zx_cluster as zc  # noqa: E402


def main():
    if not os.path.exists("/usr/lib/python3.11/test/test_concurrent_futures.py"):
        print("libpython3.11-testsuite is not installed (scripts/bootstrap installs it)")
        return 1
    with tempfile.TemporaryDirectory(prefix="zexec-cpy-") as tmp:
        c = zc.Cluster(log_dir=tmp)
        try:
            c.start_broker()
            for _ in range(2):
                c.start_pyworker("--procs", "3", "--allow-pickle", "--preload",
                                 "zexec_cpython_suite")
            c.wait_workers(2)
            cf = os.path.join(tmp, "counts.json")
            p = subprocess.run([zc.PY, os.path.join(zc.HERE, "zexec_cpython_suite.py")],
                               env=zc.env_with_path({"ZEXEC_TEST_BROKER": c.clients,
                                                     "ZEXEC_COUNTS_FILE": cf}),
                               timeout=270)
            counts = json.load(open(cf)) if os.path.exists(cf) else {}
        finally:
            c.close()
            if os.environ.get("ZEXEC_TEST_VERBOSE"):
                for f in sorted(os.listdir(tmp)):
                    print("==", f)
                    print(open(os.path.join(tmp, f), errors="replace").read()[-4000:])
    print("cpython test_concurrent_futures against zexec:", json.dumps(counts))
    if p.returncode != 0 or not counts or counts["failures"] or counts["errors"]:
        print("FAILED (exit %d)" % p.returncode)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
