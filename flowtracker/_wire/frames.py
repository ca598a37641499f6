"""Stack lines as the event-loop monitor writes them, and which of them are the user's own code.

A block's ``stack`` is ``file:line in function`` lines, innermost first. The
line a person looks for is the innermost one of *their* code: not the
standard library, not an installed package (``site-packages``,
``dist-packages``), not a frozen module, and not flowtracker itself. The
monitor names that frame (a stalled span's ``at``, the one-line log of a
block outside spans) and the views show it, through these functions.

Example:
    >>> frames = ["/usr/lib/python3.12/socket.py:720 in readinto",
    ...           "/venv/lib/python3.12/site-packages/requests/api.py:73 in get",
    ...           "/srv/app/rates.py:18 in fetch"]
    >>> user_frame(frames), library_frame(frames)
    ('/srv/app/rates.py:18 in fetch', '/usr/lib/python3.12/socket.py:720 in readinto')
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = ("is_library_frame", "library_frame", "user_frame")

# The standard library, installed packages and frozen modules.
_LIBRARY = re.compile(r"[/\\](?:site|dist)-packages[/\\]|[/\\]lib[/\\]python3[^/\\]*[/\\]|^<frozen ", re.I)
# flowtracker's own files (a checkout is not under site-packages).
_FLOWTRACKER = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def is_library_frame(frame: str) -> bool:
    """Whether a ``file:line in function`` line is not the user's code (see the module docstring).

    Example:
        >>> is_library_frame("/usr/lib/python3.12/socket.py:720 in readinto")
        True
        >>> is_library_frame("/srv/app/views.py:3 in report")
        False
    """
    return frame.startswith(_FLOWTRACKER) or _LIBRARY.search(frame) is not None


def user_frame(frames: Iterable[str]) -> str | None:
    """The innermost frame of the user's own code, or ``None``."""
    return next((frame for frame in frames if frame and not is_library_frame(frame)), None)


def library_frame(frames: Iterable[str]) -> str | None:
    """The innermost frame that is not the user's code, or ``None``."""
    return next((frame for frame in frames if frame and is_library_frame(frame)), None)
