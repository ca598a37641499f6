"""What a process under test tells the suite: its tracker's counters, in a side file.

Each process that serves requests (or makes traces) writes
``$FAULTS_STATS_DIR/stats-<pid>.json``: how many requests its handler ran,
and the public ``Tracker.stats`` of the tracker it reports to, reduced to
plain numbers. The file is rewritten

* every 0.2 s by a daemon thread, started with the first request (after any
  ``fork()``, so a ``--preload`` master starts no thread): ``"when":
  "snapshot"``, what the suite falls back to when a process dies by a signal
  and runs no exit hook;
* by the app's shutdown hook, after its tracker closed: ``"shutdown"``;
* at interpreter exit: ``"exit"``. This module registers that hook when first
  imported; import it before flowtracker, so it runs *after* flowtracker's own
  exit flush (``atexit`` runs hooks last in, first out).

Only public API is read: ``Tracker.stats``, or ``ft.default_tracker().stats``.

Example:
    >>> report = Report(None)
    >>> report.request_handled()
    >>> report.snapshot("shutdown")["handled"]
    1
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

#: Where the side files go (set by the suite); unset: nothing is written.
STATS_DIR_VAR = "FAULTS_STATS_DIR"
#: ``"default"``: report ``ft.default_tracker()`` (the app uses no tracker of its own).
STATS_SOURCE_VAR = "FAULTS_STATS_SOURCE"
SNAPSHOT_INTERVAL = 0.2


def tracker_numbers(tracker: Any) -> dict[str, Any]:
    """``tracker.stats`` as plain numbers: completed, dropped and per-lane counters."""
    stats = tracker.stats
    return {
        "completed": stats.traces_completed,
        "dropped": stats.traces_dropped,
        "unfinished": stats.traces_unfinished,
        # Absent before follow-ups were counted: the suite also runs older checkouts.
        "follow_up": getattr(stats, "traces_follow_up", 0),
        "lanes": {
            name: {
                "exported": lane.exported,
                "failed": lane.failed,
                "dropped": lane.dropped,
                "queued": lane.queued,
            }
            for name, lane in stats.exporters.items()
        },
    }


class Report:
    """One process's side file.

    Args:
        folder: Where ``stats-<pid>.json`` goes; ``None`` writes nothing.
        default: Report ``ft.default_tracker()`` (looked up in the process
            that handles requests, after any fork).
    """

    def __init__(self, folder: Path | None, *, default: bool = False) -> None:
        self.folder = folder
        self.default = default
        self.tracker: Any = None
        self.handled = 0
        self._pid = 0
        self._final = False  # a shutdown or exit report is never overwritten by a snapshot
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Report:
        """The report the environment asks for, its exit hook registered."""
        folder = os.environ.get(STATS_DIR_VAR)
        report = cls(Path(folder) if folder else None, default=os.environ.get(STATS_SOURCE_VAR) == "default")
        atexit.register(report.write, "exit")
        return report

    def watch(self, tracker: Any) -> None:
        """Reports ``tracker`` (the app's own)."""
        self.tracker = tracker

    def request_handled(self) -> None:
        """Counts one request; the first in a process starts the report."""
        if self._pid != os.getpid():
            self.start()
        self.handled += 1

    def start(self) -> None:
        """Starts reporting from this process (a forked child starts afresh)."""
        self._pid = os.getpid()
        self.handled = 0
        self._final = False
        if self.default:
            import flowtracker as ft

            self.tracker = ft.default_tracker()
        if self.folder is not None:
            threading.Thread(target=self._snapshots, name="faults-stats", daemon=True).start()

    def snapshot(self, when: str) -> dict[str, Any]:
        """The side file's content now."""
        numbers = tracker_numbers(self.tracker) if self.tracker is not None else None
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "pid": os.getpid(),
            "when": when,
            "handled": self.handled,
            "stats": numbers,
            "peak_rss_mb": round(peak_mb, 1),
        }

    def write(self, when: str) -> None:
        """Rewrites the side file (atomically: the suite may read it any time)."""
        if self.folder is None or self._pid != os.getpid():
            return  # a process that handled nothing (a --preload master) reports nothing
        with self._lock:
            if when == "snapshot" and self._final:
                return
            self._final = when != "snapshot"
            path = self.folder / f"stats-{os.getpid()}.json"
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps(self.snapshot(when)))
            os.replace(partial, path)

    def _snapshots(self) -> None:
        while True:
            self.write("snapshot")
            time.sleep(SNAPSHOT_INTERVAL)
