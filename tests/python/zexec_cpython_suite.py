"""CPython 3.11's own test_concurrent_futures (Debian's
libpython3.11-testsuite) run against zexec.Executor: an executor mixin
added to its test classes, as the suite does for ThreadPoolExecutor and
ProcessPoolExecutor.

Imported by the test process and (--preload) by the Python workers, so the
generated test classes exist on both sides: tasks such as a test class's
own classmethod are pickled by reference. Run as a program it runs the
suite against the broker at $ZEXEC_TEST_BROKER and prints one JSON line of
counts last.

Every ProcessPoolExecutor test class is mirrored. The tests that cannot
apply to a remote executor are in NOT_APPLICABLE with the reason (also in
docs/python.md); they are reported as skipped with it. No other skip is
added.
"""

import json
import multiprocessing as mp
import os
import sys
import time
import unittest

from test import test_concurrent_futures as tcf

import zexec

ENDPOINT = os.environ.get("ZEXEC_TEST_BROKER", "tcp://127.0.0.1:5570")

_BY_NAME = ("its child program (run isolated, python -I, so nothing can be added to its "
            "path) imports the executor class from concurrent.futures by name")
_PRINT = (_BY_NAME + ", and expects the task's print in its own stdout, where a zexec task "
          "prints on its worker")
_PROCS = "inspects the pool's own processes (executor._processes)"
NOT_APPLICABLE = {
    "test_interpreter_shutdown": _PRINT,
    "test_submit_after_interpreter_shutdown": _BY_NAME,
    "test_hang_gh83386": _PRINT + " (ProcessPoolExecutor skips it too)",
    "test_processes_terminate": _PROCS + " and shares a multiprocessing semaphore with them",
    "test_context_manager_shutdown": "constructs a ProcessPoolExecutor itself and inspects "
                                     "its processes",
    "test_del_shutdown": "constructs a ProcessPoolExecutor itself and joins its processes, "
                         "manager thread and call queue",
    "test_shutdown_no_wait": "constructs a ProcessPoolExecutor itself and joins its processes, "
                             "manager thread and call queue",
    "test_killed_child": "kills one of the pool's own processes (executor._processes)",
    "test_ressources_gced_in_workers": "shares a multiprocessing Manager with the workers: its "
                                       "proxies authenticate with this process's authkey, "
                                       "which a worker process does not have",
    "test_saturation": _PROCS + " and shares a multiprocessing semaphore with them",
    "test_idle_process_reuse_one": _PROCS,
    "test_idle_process_reuse_multiple": _PROCS,
    "test_max_tasks_per_child": "max_tasks_per_child is a ProcessPoolExecutor parameter "
                                "(workers manage their processes) and " + _PROCS,
    "test_max_tasks_per_child_defaults_to_spawn_context": "checks ProcessPoolExecutor's "
                                                          "multiprocessing context",
    "test_max_tasks_early_shutdown": "max_tasks_per_child is a ProcessPoolExecutor parameter "
                                     "(workers manage their processes)",
    "test_max_workers_too_large": "Windows only (skipped for ProcessPoolExecutor too)",
}


class ZexecExecutor(zexec.Executor):
    """What the tests construct: the broker from the environment;
    max_workers is the executor's window of tasks at the broker, mp_context
    has no meaning for remote workers."""

    def __init__(self, max_workers=None, mp_context=None, **kwargs):
        super().__init__(ENDPOINT, max_workers, **kwargs)


class ZexecMixin(tcf.ExecutorMixin):
    executor_type = ZexecExecutor

    def get_context(self):
        return mp.get_context("spawn")


# The ProcessPoolExecutor test classes of the suite, mirrored.
MIXINS = [tcf.InitializerMixin, tcf.FailingInitializerMixin, tcf.ProcessPoolShutdownTest,
          tcf.WaitTests, tcf.AsCompletedTests, tcf.ProcessPoolExecutorTest,
          tcf.ExecutorDeadlockTest]
for _m in MIXINS:
    tcf.create_executor_tests(_m, executor_mixins=(ZexecMixin,))


def _na(reason):
    @unittest.skip("not applicable to a remote executor: " + reason)
    def test(self):
        pass

    return test


def zexec_classes():
    out = []
    for name in sorted(vars(tcf)):
        cls = getattr(tcf, name)
        if isinstance(cls, type) and name.startswith("Zexec") and issubclass(
                cls, unittest.TestCase):
            out.append(cls)
    return out


for _cls in zexec_classes():
    for _meth, _why in NOT_APPLICABLE.items():
        if hasattr(_cls, _meth):
            setattr(_cls, _meth, _na(_why))


def process_pool_methods():
    """(class, method) of every ProcessPoolExecutor test (forkserver), to
    check that each has a zexec counterpart."""
    out = []
    for name in sorted(vars(tcf)):
        cls = getattr(tcf, name)
        if (isinstance(cls, type) and name.startswith("ProcessPoolForkserver")
                and issubclass(cls, unittest.TestCase)):
            for m in unittest.TestLoader().getTestCaseNames(cls):
                out.append((name[len("ProcessPoolForkserver"):], m))
    return out


class _Result(unittest.TextTestResult):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.passed = []
        self.times = []

    def startTest(self, test):
        super().startTest(test)
        self._t0 = time.monotonic()

    def stopTest(self, test):
        super().stopTest(test)
        self.times.append((time.monotonic() - self._t0, test.id()))

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test.id())


def main():
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for cls in zexec_classes():
        suite.addTests(loader.loadTestsFromTestCase(cls))
    suite.addTests(loader.loadTestsFromTestCase(tcf.FutureTests))
    tcf.setUpModule()
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_Result, stream=sys.stderr)
    res = runner.run(suite)
    unittest.case.doModuleCleanups()
    passed = {t.rsplit(".", 2)[-2][len("Zexec"):] + "." + t.rsplit(".", 1)[-1]
              for t in res.passed if ".Zexec" in t}
    na = {t.id().rsplit(".", 2)[-2][len("Zexec"):] + "." + t.id().rsplit(".", 1)[-1]
          for t, _ in res.skipped if ".Zexec" in t.id()}
    missing = [c + "." + m for c, m in process_pool_methods()
               if c + "." + m not in passed and c + "." + m not in na]
    counts = {"run": res.testsRun, "passed": len(res.passed), "not_applicable": len(res.skipped),
              "failures": len(res.failures), "errors": len(res.errors),
              "future_tests_passed": sum(1 for t in res.passed if ".FutureTests." in t),
              "process_pool_tests": len(process_pool_methods()),
              "process_pool_tests_without_counterpart": missing}
    for dt, name in sorted(res.times, reverse=True)[:10]:
        print("%6.2f s  %s" % (dt, name), file=sys.stderr)
    line = "ZEXEC-COUNTS " + json.dumps(counts)
    print(line, file=sys.stderr)
    if os.environ.get("ZEXEC_COUNTS_FILE"):
        with open(os.environ["ZEXEC_COUNTS_FILE"], "w") as f:
            f.write(json.dumps(counts))
    ok = res.wasSuccessful() and not missing
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
