"""A thread pool whose threads exist before they are needed, for exit-time flushes.

The default tracker flushes from an ``atexit`` hook. By then the interpreter
refuses to start threads and ``concurrent.futures`` refuses new work, yet
exporters still need a thread for blocking calls (file writes,
aiohttp's DNS look-ups go through the loop's default executor). This executor
starts its daemon threads up front and keeps accepting work until it is shut
down, so the last traces are written like any others.

Example:
    >>> pool = PrestartedExecutor(workers=1)
    >>> pool.submit(sum, [1, 2]).result()
    3
    >>> pool.shutdown()
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

_T = TypeVar("_T")
_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class PrestartedExecutor(ThreadPoolExecutor):
    """``workers`` daemon threads, started at construction.

    A ``ThreadPoolExecutor`` only by type (asyncio's ``set_default_executor``
    insists on one); submission and shutdown are its own.
    """

    def __init__(self, workers: int = 2, name: str = "flowtracker-io") -> None:
        super().__init__(max_workers=workers, thread_name_prefix=name)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._workers:
            thread.start()

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        if self._closed:
            raise RuntimeError("executor is shut down")
        future: Future[_T] = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._workers:
            self._jobs.put(None)
        if wait:
            for thread in self._workers:
                if thread is not threading.current_thread():
                    thread.join()
