"""What ``fork()`` must not catch half-way: the trackers' own threads.

``fork()`` copies only the thread that calls it. A tracker thread that was in
the middle of something when another thread forked leaves the child a copy
of whatever lock it held: an import lock (``import`` in a thread takes a
per-module lock for as long as the module runs), or ``sys.stdout``'s (the
console exporter writes there). The child then hangs the first time it
imports that module or prints.

Two things prevent that:

* **Parked at a safe point.** Just before a fork (``os.register_at_fork``),
  every tracker thread is asked to run one callback that waits until the fork
  is done. The thread gets there between two callbacks of its loop, holding
  no lock; the forking thread waits for it (at most :data:`PARK_TIMEOUT`
  seconds: a thread stuck in a blocking exporter call does not stop the
  fork). The parent's threads then carry on where they were.
* **Nothing imported lazily on those threads.** :func:`import_before_threads`
  runs on the thread that starts a tracker thread, before it starts, and
  imports what would otherwise be imported there on first use: anyio's
  asyncio backend (loaded at the first stream operation), the codec that
  asyncio's DNS look-ups use, and what the exporters register with
  :func:`needs_modules`.

What a tracker does in the child is the tracker's business (see
``flowtracker._pipeline.tracker``); this module only keeps its threads safe.

Example:
    >>> from flowtracker._pipeline.fork import needs_modules
    >>> needs_modules("json")
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import threading
import time
import weakref

#: Seconds a fork waits for a tracker thread to reach a safe point.
PARK_TIMEOUT = 1.0
#: Seconds a parked thread waits for the fork to finish before it moves on anyway.
RESUME_TIMEOUT = 10.0

#: Imported before any tracker thread starts (see the module docstring).
_BEFORE_THREADS: set[str] = {"anyio._backends._asyncio", "encodings.idna"}
_imported: set[str] = set()


def needs_modules(*names: str) -> None:
    """Registers modules to import on the starting thread before a tracker thread starts.

    For exporters whose methods import a library on first use: that import
    would otherwise run on the tracker's thread, where a fork can cut it.
    """
    _BEFORE_THREADS.update(names)


def import_before_threads() -> None:
    """Imports every registered module now, on the calling thread.

    A module that is not installed is skipped: the exporter that needs it
    fails as it would have, at its first export.
    """
    for name in sorted(_BEFORE_THREADS - _imported):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
        _imported.add(name)


class _Parking:
    """One thread's stop at one fork."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.resume = threading.Event()

    def wait_here(self) -> None:  # on the parked thread, as a loop callback
        self.arrived.set()
        self.resume.wait(RESUME_TIMEOUT)


#: Loops running in a tracker thread, with their thread.
_threads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, threading.Thread] = weakref.WeakKeyDictionary()
_parked = threading.local()


def park_at_fork(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Has ``thread`` (which runs ``loop``) stop at a safe point during every fork."""
    _threads[loop] = thread


def _park_all() -> None:
    parkings = []
    me = threading.current_thread()
    for loop, thread in list(_threads.items()):
        if thread is me or not thread.is_alive() or loop.is_closed():
            continue
        parking = _Parking()
        try:
            loop.call_soon_threadsafe(parking.wait_here)
        except RuntimeError:  # closed meanwhile
            continue
        parkings.append(parking)
    deadline = time.monotonic() + PARK_TIMEOUT
    for parking in parkings:
        # One that arrives late still stops when it gets there, until resumed.
        parking.arrived.wait(max(0.0, deadline - time.monotonic()))
    _parked.parkings = parkings


def _resume_all() -> None:
    for parking in getattr(_parked, "parkings", ()):
        parking.resume.set()
    _parked.parkings = []


def _forget_in_child() -> None:
    # The threads were not copied; a new tracker thread registers itself anew.
    _threads.clear()
    _parked.parkings = []


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(before=_park_all, after_in_parent=_resume_all, after_in_child=_forget_in_child)
