"""The exceptions a zexec future can raise besides the task's own.

A task's own exception comes back as its original type (pickled tasks) or,
for named functions, as the built-in exception of that name when there is
one (ValueError, KeyError, ...) and as RemoteError otherwise; either way
with the remote traceback attached as __cause__, a
concurrent.futures.process._RemoteTraceback, as ProcessPoolExecutor does.
"""

from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool


class ZexecError(Exception):
    """Base of the errors zexec itself reports."""


class RemoteError(ZexecError):
    """A named function raised an exception with no built-in Python
    equivalent; .type is its type name as the worker reported it."""

    def __init__(self, type_name, message):
        super().__init__("%s: %s" % (type_name, message))
        self.type = type_name
        self.message = message


class NoFunctionError(ZexecError):
    """No connected worker offers the function (status NOFUNC)."""


class NoWorkerError(NoFunctionError):
    """The broker waited its grace period and no worker offered it."""


class TimeLimitError(ZexecError):
    """The task ran past its time limit on the worker (status TIMELIMIT).
    Not a TimeoutError: that is what result(timeout=...) raises."""


class ProcessCrashed(ZexecError, BrokenProcessPool):
    """The worker process running the task died (status CRASHED). A
    BrokenProcessPool, so code written for ProcessPoolExecutor that catches
    it keeps working; unlike there, only this future fails."""


class WorkerLostError(ZexecError):
    """The worker running the task was lost and its retries are used up."""


class QuotaError(ZexecError):
    """The broker refused the task: the client's queue quota (REJECTED)."""


class NotAllowedError(ZexecError):
    """The function may not run in the requested pool, or not at all there."""


class ProtocolError(ZexecError):
    """A payload that is not what the protocol says (not msgpack, an error
    that is not [type, message, traceback])."""


class ResultUnpicklingError(ZexecError, BrokenProcessPool):
    """A pickled result could not be unpickled in this process (its cause
    is attached). A BrokenProcessPool as with ProcessPoolExecutor, but only
    this future fails."""


class BrokerUnreachableError(ZexecError, ConnectionError):
    """The broker was unreachable for the executor's broker_timeout."""


class BrokenZexecExecutor(BrokenExecutor):
    """The executor's initializer failed on a worker: like a
    ThreadPoolExecutor or ProcessPoolExecutor, the executor is broken."""


_BY_NAME = {c.__name__: c for c in (NoFunctionError, NoWorkerError, TimeLimitError,
                                    ProcessCrashed, WorkerLostError, QuotaError,
                                    NotAllowedError)}
