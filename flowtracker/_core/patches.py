"""Every runtime patch flowtracker makes, installed and undone in one place, each with its reason.

flowtracker changes code that is not its own state in a few places, and only
while a feature that needs it is on: the span's ``__exit__`` while an
event-loop monitor observes spans, ``asyncio.events.Handle._run`` while a
loop is monitored, OpenTelemetry's runtime context once ``flowtracker.otel``
is used, and the instrumented libraries' methods (or their event hooks)
between ``ft.instrument()`` and ``ft.uninstrument()``. Each of them is made
here, through :func:`patch_attribute` or :func:`patch_hook`, with a reason,
and undone through the :class:`Patch` they return; :func:`active` lists
what is patched now. ``docs/architecture.md`` ("What flowtracker patches,
and when") lists them all, and ``tests/test_layers.py`` fails on an
assignment to another module's or class's attribute made anywhere else.

It lives in the core, the lowest layer that patches (``Span.__exit__``), so
every layer can use it.

Example:
    >>> import json
    >>> patch = patch_attribute(json, "dumps", lambda obj: "{}", reason="a doctest")
    >>> json.dumps([1]), [p.target for p in active()]
    ('{}', ['json.dumps'])
    >>> patch.undo()
    True
    >>> json.dumps([1]), active()
    ('[1]', ())
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ("Patch", "active", "patch_attribute", "patch_hook")

logger = logging.getLogger("flowtracker.patches")

# Patches in place, oldest first. Changed under _lock only (installs and
# undos are rare: a feature turned on or off).
_active: list[Patch] = []
_lock = threading.Lock()


class Patch:
    """One change flowtracker made; :meth:`undo` takes it back.

    Attributes:
        target: What was changed (``asyncio.events.Handle._run``, or a hook's description).
        reason: Why, in a sentence.
        owner: The module or class whose attribute was replaced (``None`` for a hook).
        name: The attribute's name (``None`` for a hook).
        original: The attribute's value before flowtracker replaced it (``None`` for a hook).
        replacement: What flowtracker put there (``None`` for a hook).
        installed: True until undone (or until re-patched by flowtracker itself).
    """

    __slots__ = ("installed", "name", "original", "owner", "reason", "remove", "replacement", "target")

    def __init__(
        self,
        target: str,
        reason: str,
        owner: Any = None,
        name: str | None = None,
        original: Any = None,
        replacement: Any = None,
        remove: Callable[[], object] | None = None,
    ) -> None:
        self.target = target
        self.reason = reason
        self.owner = owner
        self.name = name
        self.original = original
        self.replacement = replacement
        self.remove = remove
        self.installed = True

    def undo(self) -> bool:
        """Takes the change back; a second call does nothing.

        Returns False when an attribute was not put back because something
        else replaced flowtracker's replacement since (putting the original
        back would silently drop that one too); it is logged, and left as it is.
        """
        with _lock:
            if not self.installed:
                return True
            self.installed = False
            _active.remove(self)
            owner, name = self.owner, self.name
            if name is not None:
                if owner.__dict__.get(name) is self.replacement:
                    setattr(owner, name, self.original)
                    return True
                logger.warning(
                    "flowtracker could not restore %s: something else replaced it after "
                    "flowtracker did; left as it is",
                    self.target,
                )
                return False
        assert self.remove is not None
        self.remove()  # outside the lock: a library's own code runs here
        return True

    def __repr__(self) -> str:
        state = "installed" if self.installed else "undone"
        return f"<Patch {self.target} {state}: {self.reason}>"


def patch_attribute(owner: Any, name: str, replacement: Any, *, reason: str) -> Patch:
    """Replaces ``owner.name`` (a module's or class's own attribute) with ``replacement``.

    Patching an attribute flowtracker already replaced swaps the replacement
    in one step; undoing the new patch then puts back the value from before
    flowtracker (the old patch counts as undone).

    Args:
        owner: The module or class.
        name: The attribute, defined on ``owner`` itself (not inherited: an
            undo must put back exactly what was there).
        replacement: The new value.
        reason: Why, in a sentence (``active()`` and logs show it).

    Raises:
        AttributeError: ``owner`` has no attribute ``name`` of its own.
    """
    if isinstance(owner, ModuleType):
        target = f"{owner.__name__}.{name}"
    else:
        target = f"{owner.__module__}.{owner.__qualname__}.{name}"
    with _lock:
        namespace = owner.__dict__
        if name not in namespace:
            raise AttributeError(f"{target} is not an attribute of its own: flowtracker cannot patch it")
        current = namespace[name]
        original = current
        for previous in _active:
            if previous.owner is owner and previous.name == name:
                if current is previous.replacement:  # ours: the value before flowtracker stays the original
                    original = previous.original
                previous.installed = False
                _active.remove(previous)
                break
        setattr(owner, name, replacement)
        patch = Patch(target, reason, owner, name, original, replacement)
        _active.append(patch)
        return patch


def patch_hook(
    target: str, install: Callable[[], object], remove: Callable[[], object], *, reason: str
) -> Patch:
    """Installs a change made through a library's own API (an event listener), with ``install()``.

    Args:
        target: What it changes, for :func:`active` and the docs.
        install: Makes the change (called now).
        remove: Takes it back (called by :meth:`Patch.undo`).
        reason: Why, in a sentence.
    """
    install()  # outside the lock: a library's own code runs here
    patch = Patch(target, reason, remove=remove)
    with _lock:
        _active.append(patch)
    return patch


def active() -> tuple[Patch, ...]:
    """The patches in place now, oldest first."""
    with _lock:
        return tuple(_active)
