"""The installed package's version, read once when first asked for.

``importlib.metadata`` alone costs about 20 ms to import, so nothing reads
the version at import time.

Example:
    >>> from flowtracker._core.version import package_version
    >>> isinstance(package_version(), str)
    True
"""

from __future__ import annotations

import functools


@functools.cache
def package_version() -> str:
    """flowtracker's version from the installed metadata (``0+unknown`` in a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flowtracker")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
