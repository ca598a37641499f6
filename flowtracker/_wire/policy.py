"""What export may write: secret-looking tag values redacted, long strings cut.

Applied in the exporter lanes while a trace is encoded, never on the request
path, and counted per tracker (``Tracker.stats.tags_redacted`` /
``values_truncated``).

Redaction looks at names only, never at values (scrubbing values by pattern
mangles innocent data). One rule, :func:`is_secret_name`, decides for tag keys
at export and for request headers the middlewares record: a name is secret
when its *last words* are one of the secret words or phrases. The name is cut
into lowercase words at dots, dashes, underscores, spaces and camelCase
humps, and a trailing number is ignored, so ``authorization``,
``http.request.header.cookie``, ``db.password``, ``client_secret``,
``X-Api-Key``, ``accessToken``, ``aws_secret_access_key`` and
``X-Hub-Signature-256`` are secret, while ``llm.token_count``,
``gen_ai.usage.input_tokens``, ``tokenizer``, ``secretary``,
``cookie_consent_shown``, ``:authority`` and ``www-authenticate`` are not
(the last word names what the value is: a count, a flag, a host).

Example:
    >>> is_secret_name("http.request.header.x-auth-token"), is_secret_name("llm.token_count")
    (True, False)
    >>> policy = ExportPolicy(redact_keys=["ssn", "credit-card"])
    >>> policy.is_secret("customer.creditCard"), policy.is_secret("db.password")
    (True, False)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: The secret words and phrases (see the module docstring); a phrase's words
#: are separated as in names (``api_key`` is the two words ``api key``).
DEFAULT_REDACT_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "auth",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_key",
        "secret_key",
        "private_key",
        "session",
        "session_id",
        "sessionid",
        "credential",
        "credentials",
        "signature",
    }
)

#: What a redacted value becomes.
REDACTED = "[REDACTED]"

#: Longest string exported as is (tag values, names, messages), in characters.
DEFAULT_MAX_STRING = 4096

_CACHE_LIMIT = 4096

# Words of a name: an acronym before a capitalised word ("API" in "APIKey"),
# a capitalised or lowercase word, a number. Everything else separates.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

Phrase = tuple[str, ...]


def name_words(name: str) -> Phrase:
    """``name`` as lowercase words, a trailing number dropped.

    Example:
        >>> name_words("X-Hub-Signature-256"), name_words("APIKey"), name_words("db.session_id")
        (('x', 'hub', 'signature'), ('api', 'key'), ('db', 'session', 'id'))
    """
    words = [word.lower() for word in _WORD.findall(name)]
    while words and words[-1].isdigit():
        words.pop()
    return tuple(words)


def secret_phrases(words: Iterable[str]) -> frozenset[Phrase]:
    """The phrases :func:`is_secret_name` matches, from words written as in names."""
    return frozenset(phrase for phrase in map(name_words, words) if phrase)


DEFAULT_SECRET_PHRASES = secret_phrases(DEFAULT_REDACT_KEYS)


def is_secret_name(name: str, phrases: frozenset[Phrase] = DEFAULT_SECRET_PHRASES) -> bool:
    """True when ``name`` (a tag key, a header name) ends in one of ``phrases``.

    Example:
        >>> is_secret_name("Proxy-Authorization"), is_secret_name("x-session-timeout")
        (True, False)
    """
    words = name_words(name)
    return any(words[-len(phrase) :] == phrase for phrase in phrases)


class ExportPolicy:
    """Redaction words, the string limit, and the counters of what they changed.

    Args:
        redact_keys: Secret words and phrases (default :data:`DEFAULT_REDACT_KEYS`);
            an empty set turns redaction off.
        max_string: Longest string kept whole (default 4096 characters).
    """

    __slots__ = ("max_string", "redact_keys", "redacted", "secret_cache", "truncated")

    def __init__(
        self, redact_keys: Iterable[str] | None = None, max_string: int = DEFAULT_MAX_STRING
    ) -> None:
        #: The phrases matched (empty: redaction off).
        self.redact_keys = (
            DEFAULT_SECRET_PHRASES if redact_keys is None else secret_phrases(redact_keys)
        )
        if max_string < 16:
            raise ValueError(f"max_string must be at least 16, got {max_string}")
        self.max_string = max_string
        self.redacted = 0
        self.truncated = 0
        #: Key -> verdict of :meth:`is_secret`, for the encoder's per-tag fast path,
        #: which passes a key on unescaped once it is here as not secret: the
        #: encoder asks only with keys it has escaped (valid text).
        self.secret_cache: dict[str, bool] = {}

    def is_secret(self, key: str) -> bool:
        """Whether values under ``key`` are redacted (cached: keys repeat)."""
        cached = self.secret_cache.get(key)
        if cached is not None:
            return cached
        secret = is_secret_name(key, self.redact_keys)
        if len(self.secret_cache) < _CACHE_LIMIT:
            self.secret_cache[key] = secret
        return secret


#: The policy for traces encoded outside any tracker (e.g. by the CLI).
DEFAULT_POLICY = ExportPolicy()
