"""What export may write: secret-looking tag values redacted, long strings cut.

Applied in the exporter lanes while a trace is encoded, never on the request
path, and counted per tracker (``Tracker.stats.tags_redacted`` /
``values_truncated``).

Redaction looks at tag *keys* only, never at values (scrubbing values by
pattern mangles innocent data). A key is secret when its last dotted part,
lower-cased with ``-`` read as ``_``, is one of the configured words or ends
in ``_<word>``: ``authorization``, ``http.request.header.cookie``,
``db.password``, ``client_secret``, ``x-api-key`` are redacted;
``token_count`` and ``secretary`` are not.

Example:
    >>> policy = ExportPolicy()
    >>> policy.is_secret("http.request.header.authorization"), policy.is_secret("llm.token_count")
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterable

#: Tag-key words whose values are replaced by ``REDACTED`` (see the module docstring).
DEFAULT_REDACT_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "session",
        "session_id",
        "credentials",
    }
)

#: What a redacted value becomes.
REDACTED = "[REDACTED]"

#: Longest string exported as is (tag values, names, messages), in characters.
DEFAULT_MAX_STRING = 4096

_CACHE_LIMIT = 4096


class ExportPolicy:
    """Redaction words, the string limit, and the counters of what they changed.

    Args:
        redact_keys: Key words to redact (default :data:`DEFAULT_REDACT_KEYS`);
            an empty set turns redaction off.
        max_string: Longest string kept whole (default 4096 characters).
    """

    __slots__ = ("max_string", "redact_keys", "redacted", "secret_cache", "truncated")

    def __init__(
        self, redact_keys: Iterable[str] | None = None, max_string: int = DEFAULT_MAX_STRING
    ) -> None:
        words = DEFAULT_REDACT_KEYS if redact_keys is None else redact_keys
        self.redact_keys = frozenset(word.lower().replace("-", "_") for word in words)
        if max_string < 16:
            raise ValueError(f"max_string must be at least 16, got {max_string}")
        self.max_string = max_string
        self.redacted = 0
        self.truncated = 0
        #: Key -> verdict of :meth:`is_secret`, for the encoder's per-tag fast path.
        self.secret_cache: dict[str, bool] = {}

    def is_secret(self, key: str) -> bool:
        """Whether values under ``key`` are redacted (cached: keys repeat)."""
        cached = self.secret_cache.get(key)
        if cached is not None:
            return cached
        last = key.rsplit(".", 1)[-1].lower().replace("-", "_")
        secret = any(last == word or last.endswith("_" + word) for word in self.redact_keys)
        if len(self.secret_cache) < _CACHE_LIMIT:
            self.secret_cache[key] = secret
        return secret


#: The policy for traces encoded outside any tracker (e.g. by the CLI).
DEFAULT_POLICY = ExportPolicy()
