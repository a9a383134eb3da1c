"""zexec for Python: a concurrent.futures.Executor whose tasks run on a zexec
cluster (zexec.Executor), and a worker node in Python (zexec.worker,
the zexec-pyworker command). Pure Python over pyzmq and msgpack; pickled
callables need cloudpickle on both sides. docs/python.md has the guide,
docs/protocol.md the wire protocol both follow.
"""

from .client import Executor, status
from .errors import (BrokenZexecExecutor, BrokerUnreachableError, NoFunctionError,
                     NoWorkerError, NotAllowedError, ProcessCrashed, ProtocolError, QuotaError,
                     RemoteError, ResultUnpicklingError, TimeLimitError, WorkerLostError,
                     ZexecError)

__all__ = ["Executor", "status", "BrokenZexecExecutor", "BrokerUnreachableError", "NoFunctionError",
           "NoWorkerError", "NotAllowedError", "ProcessCrashed", "ProtocolError", "QuotaError",
           "RemoteError", "ResultUnpicklingError", "TimeLimitError", "WorkerLostError",
           "ZexecError"]
__version__ = "0.1.0"
