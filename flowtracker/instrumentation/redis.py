"""redis-py: a client span per command, one per pipeline, sync and asyncio clients.

Wrapped: ``execute_command`` of ``redis.Redis`` and ``redis.asyncio.Redis``
(every command method goes through it), and ``execute`` and
``immediate_execute_command`` (the commands of a ``WATCH`` block) of both
``Pipeline`` classes. Cluster clients (``RedisCluster``) are not covered.

* A command's span is named by the command (``GET``, ``SET``,
  ``CLIENT SETNAME``). A pipeline or transaction is one span named
  ``PIPELINE``, tagged ``db.redis.pipeline_length`` (the count),
  ``db.redis.commands`` (their names, in order, space-separated) and, for a
  ``MULTI``/``EXEC`` transaction, ``db.redis.transaction``.
* Tags: ``db.system`` = ``"redis"``; ``db.statement``, the command and its key
  with every other argument replaced by ``?`` (``SET user:1 ?``; one line per
  command for a pipeline), so no value is ever recorded (for ``AUTH`` and
  ``ECHO`` not even the first argument); ``db.redis.database_index``;
  ``net.peer.name`` and ``net.peer.port`` (a Unix socket: its path, no port).
* Binary keys are decoded as UTF-8 with replacement characters.
* A failed command is an ``error`` span; the exception propagates unchanged.

A command sent outside any span is left alone.

Example:
    >>> statement(("SET", b"user:1", "x" * 1_000_000, "EX", 60))
    ('SET', 'SET user:1 ? ? ?')
"""

from __future__ import annotations

from typing import Any

from .._core import Span, start_child
from ._patch import Patches, async_wrapper, sync_wrapper

__all__ = ("LIBRARY", "PIP", "install", "statement", "uninstall")

LIBRARY = "redis"
PIP = "flowtracker[redis]"

_patches = Patches(LIBRARY, "a client span per command and per pipeline")

# Commands whose first argument is a secret or a value, not a key.
_NO_KEY = frozenset({"AUTH", "ECHO"})


def install() -> None:
    """Wraps the sync and asyncio clients and pipelines; does nothing when already done."""
    import redis.asyncio.client as aio
    import redis.client as sync

    if _patches.active:
        return
    command, pipeline = sync_wrapper(LIBRARY, _command_span), sync_wrapper(LIBRARY, _pipeline_span)
    _patches.wrap(sync.Redis, "execute_command", command)
    _patches.wrap(sync.Pipeline, "immediate_execute_command", command)
    _patches.wrap(sync.Pipeline, "execute", pipeline)
    command, pipeline = async_wrapper(LIBRARY, _command_span), async_wrapper(LIBRARY, _pipeline_span)
    _patches.wrap(aio.Redis, "execute_command", command)
    _patches.wrap(aio.Pipeline, "immediate_execute_command", command)
    _patches.wrap(aio.Pipeline, "execute", pipeline)


def uninstall() -> None:
    """Puts redis-py's own methods back; commands already in flight finish as they began."""
    _patches.restore()


def _text(value: Any) -> str:
    """A command argument as text: bytes decoded as UTF-8, invalid bytes replaced."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, memoryview):
        return value.tobytes().decode("utf-8", "replace")
    return str(value)


def statement(args: tuple[Any, ...]) -> tuple[str, str]:
    """A command's name and its ``db.statement``: the key kept, every other argument ``?``.

    Example:
        >>> statement(("GET", b"\\xffkey"))
        ('GET', 'GET \\ufffdkey')
        >>> statement(("AUTH", "alice", "s3cret"))
        ('AUTH', 'AUTH ? ?')
    """
    name = _text(args[0]).upper()
    count = len(args)
    if count == 1:
        return name, name
    if name in _NO_KEY:
        return name, name + " ?" * (count - 1)
    return name, f"{name} {_text(args[1])}{' ?' * (count - 2)}"


def _tags(client: Any, text: str) -> dict[str, Any]:
    """The tags every span of ``client`` carries, with ``text`` as ``db.statement``."""
    kwargs = client.connection_pool.connection_kwargs
    tags = {"db.system": "redis", "db.statement": text, "db.redis.database_index": kwargs.get("db", 0)}
    host = kwargs.get("host")
    if host is not None:
        tags["net.peer.name"] = host
        tags["net.peer.port"] = kwargs.get("port", 6379)
    elif kwargs.get("path") is not None:  # a Unix socket
        tags["net.peer.name"] = kwargs["path"]
    return tags


def _command_span(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span | None:
    """The span of ``execute_command(*args)``."""
    if not args:
        return None
    name, text = statement(args)
    return start_child(name, _tags(client, text), kind="client")


def _pipeline_span(pipeline: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span | None:
    """The span of a pipeline's ``execute()``; ``None`` when nothing is queued (nothing is sent)."""
    stack = pipeline.command_stack
    if not stack:
        return None
    names: list[str] = []
    lines: list[str] = []
    for command, _options in stack:
        name, text = statement(command)
        names.append(name)
        lines.append(text)
    tags = _tags(pipeline, "\n".join(lines))
    tags["db.redis.pipeline_length"] = len(stack)
    tags["db.redis.commands"] = " ".join(names)
    # The asyncio Pipeline says `is_transaction`; the sync one `transaction` (on
    # the asyncio one that name is Redis.transaction(), a method).
    transaction = getattr(pipeline, "is_transaction", None)
    if transaction is None:
        transaction = pipeline.transaction
    if transaction or pipeline.explicit_transaction:
        tags["db.redis.transaction"] = True
    return start_child("PIPELINE", tags, kind="client")
