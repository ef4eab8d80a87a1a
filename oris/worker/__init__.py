"""The workflow SDK and the worker process that executes leased attempts."""

from oris.worker.builtins import builtin_registry
from oris.worker.context import Context
from oris.worker.errors import PermanentError, RetryableError, WorkflowError
from oris.worker.registry import AppLoadError, Registry, load_registry
from oris.worker.runner import Worker, run_worker

__all__ = [
    "AppLoadError",
    "Context",
    "PermanentError",
    "Registry",
    "RetryableError",
    "Worker",
    "WorkflowError",
    "builtin_registry",
    "load_registry",
    "run_worker",
]
