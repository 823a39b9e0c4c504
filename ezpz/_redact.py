"""One redaction policy for every output ezpz writes or sends.

Values of config keys that look like secrets are replaced by
:data:`REDACTED` in every output (``metrics.jsonl``'s start record,
``config.json``, the ``.h5`` attributes, MLflow params, the wandb config,
``report.md``), at any nesting depth. Credentials inside URLs become ``***``
in logs and outputs.

The key rule (docs/reliability.md, "Redaction policy"): a key is split into words at ``_``, ``-``, ``.``
(also ``/``, ``:`` and spaces, as in flattened keys like ``wandb/api_key``)
and camelCase boundaries, case-insensitively. It names a secret when its
words

- include ``password``, ``passwd``, ``secret`` or ``credential`` (plurals
  ``passwords``, ``secrets``, ``credentials`` too), or
- end in ``token``, or
- end in ``key`` right after ``api``, ``access``, ``private`` or ``secret``.

So ``api_key``, ``hf_token``, ``AWS_SECRET_ACCESS_KEY``, ``db_password``,
``apiKey`` and ``clientSecret`` are secrets; ``max_tokens``, ``tokenizer``,
``sort_key``, ``key`` and ``token_budget`` are not. A trailing all-digit
word is ignored (``api_key_2`` is a secret).

Log messages of ezpz's tracker modules pass :class:`SecretLogFilter`
(:func:`protect_logger`): URL credentials become ``***`` and the values of
secret-named environment variables (``MLFLOW_TRACKING_TOKEN``,
``AMSC_API_KEY``, the password of ``MLFLOW_TRACKING_URI``...) become ``***``,
in the message and in the formatted traceback.

Opt-out: ``EZPZ_LOG_SECRETS=1`` makes :func:`redact_config` return the
config unredacted (for users who really want the values logged). Log
messages are masked regardless.

Only the standard library is used; importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "LOG_SECRETS_ENV",
    "MAX_DEPTH",
    "REDACTED",
    "SecretLogFilter",
    "is_secret_key",
    "key_words",
    "mask_url",
    "mask_urls",
    "protect_logger",
    "redact_config",
    "redact_text",
    "secrets_allowed",
]

#: the marker that replaces a secret value
REDACTED = "<redacted>"
#: environment variable that turns config redaction off
LOG_SECRETS_ENV = "EZPZ_LOG_SECRETS"
#: containers nested deeper than this are replaced by a marker (no RecursionError)
MAX_DEPTH = 100

_ANYWHERE = frozenset(
    {"password", "passwords", "passwd", "secret", "secrets", "credential", "credentials"}
)
_KEY_QUALIFIERS = frozenset({"api", "access", "private", "secret"})
# camelCase / acronym boundaries: "HFToken" -> HF Token, "apiKey" -> api Key
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+")
_SEPARATORS = re.compile(r"[_\-.\s/:]+")
# scheme://userinfo@ -> scheme://***@ (userinfo has no '/', '@' or whitespace)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_FLAG_WORDS = frozenset({"true", "false", "none", "null", "unset", "disabled", "enabled"})
_CYCLE = "<recursive reference>"
_TOO_DEEP = "<nested too deep>"


def key_words(name: str) -> list[str]:
    """The lower-case words of ``name`` as the secret rule sees them."""
    words: list[str] = []
    for part in _SEPARATORS.split(str(name)):
        words += [w.lower() for w in _WORD.findall(part)]
    while words and words[-1].isdigit():
        words.pop()
    return words


def is_secret_key(name: Any) -> bool:
    """Whether a config key (or variable / option name) looks like it holds a secret.

    >>> [is_secret_key(k) for k in ("api_key", "hf_token", "AWS_SECRET_ACCESS_KEY")]
    [True, True, True]
    >>> [is_secret_key(k) for k in ("max_tokens", "tokenizer", "sort_key")]
    [False, False, False]
    """
    words = key_words(str(name))
    if not words:
        return False
    if any(w in _ANYWHERE for w in words):
        return True
    if words[-1] == "token":
        return True
    return words[-1] == "key" and len(words) >= 2 and words[-2] in _KEY_QUALIFIERS


def mask_url(url: str) -> str:
    """``url`` with the ``user:password@`` part replaced by ``***@``.

    Works on any text: every ``scheme://userinfo@`` in it is masked.
    ``http://alice:pw@host/`` becomes ``http://***@host/``.
    """
    return _URL_USERINFO.sub(r"\g<scheme>***@", str(url))


mask_urls = mask_url  # the same function, named for free text


def _secret_values(env: Mapping[str, str]) -> list[str]:
    values: list[str] = []
    for name, value in env.items():
        if is_secret_key(name):
            values.append(value)
        elif "://" in value and "@" in value:  # a URL with credentials: its password
            try:
                password = urlsplit(value.strip()).password
            except ValueError:
                password = None
            if password:
                values.append(password)
    # longest first, so a value containing another is replaced whole; flag
    # words ("true") and short values are no secrets and would mask too much
    keep = {v for v in values if len(v) >= 4 and v.lower() not in _FLAG_WORDS}
    return sorted(keep, key=len, reverse=True)


def redact_text(text: str, env: Mapping[str, str] | None = None) -> str:
    """Free text (a log message, an exception) with credentials replaced by ``***``.

    URL userinfo is masked (:func:`mask_url`), and so is every value (4+
    characters) of an environment variable with a secret name, and the
    password of a URL-valued variable such as ``MLFLOW_TRACKING_URI``.
    """
    text = mask_url(text)
    for value in _secret_values(os.environ if env is None else env):
        if value in text:
            text = text.replace(value, "***")
    return text


class SecretLogFilter(logging.Filter):
    """A logging filter that passes every record with credentials masked (:func:`redact_text`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the handler's problem, not ours
            return True
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[0] is not None:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_text(record.exc_text)
        return True


_FILTER = SecretLogFilter()


def protect_logger(logger: logging.Logger) -> logging.Logger:
    """Attach the shared :class:`SecretLogFilter` to ``logger`` (idempotent); returns it."""
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def secrets_allowed() -> bool:
    """True when the user opted out of redaction with ``EZPZ_LOG_SECRETS=1``."""
    from ezpz._env import env_flag

    return env_flag(LOG_SECRETS_ENV, False)


def redact_config(obj: Any, *, force: bool = False) -> Any:
    """A deep copy of ``obj`` with the values of secret-named keys replaced by :data:`REDACTED`.

    Mappings become dicts (keys kept as they are), lists and tuples keep
    their type, dataclass instances and namespaces (``argparse.Namespace``)
    become dicts of their fields; other values are returned as they are (not
    copied). Strings
    lose URL credentials (``scheme://user:pw@`` -> ``scheme://***@``).
    A container that contains itself is cut at the repetition, and nesting
    deeper than :data:`MAX_DEPTH` is replaced by a marker, so any object is
    safe to pass. With ``EZPZ_LOG_SECRETS=1`` (and not ``force``) only the
    copy is made.
    """
    redact = force or not secrets_allowed()
    return _copy(obj, redact, 0, set())


def _as_mapping(obj: Any) -> dict[str, Any] | None:
    """The fields of a dataclass instance or a namespace object, else None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, SimpleNamespace) or type(obj).__name__ == "Namespace":
        try:
            return dict(vars(obj))
        except TypeError:
            return None
    return None


def _copy(obj: Any, redact: bool, depth: int, active: set[int]) -> Any:
    if isinstance(obj, str):
        return mask_url(obj) if redact else obj
    if not isinstance(obj, (Mapping, list, tuple)):
        fields = _as_mapping(obj) if redact else None
        if fields is None:
            return obj
        if id(obj) in active:
            return _CYCLE
        active.add(id(obj))
        try:  # a dataclass / namespace config: its fields, as a dict, redacted
            return _copy(fields, redact, depth, active)
        finally:
            active.discard(id(obj))
    if id(obj) in active:
        return _CYCLE
    if depth >= MAX_DEPTH:
        return _TOO_DEEP
    active.add(id(obj))
    try:
        if isinstance(obj, Mapping):
            return {
                k: (
                    REDACTED
                    if redact and is_secret_key(k) and v is not None
                    else _copy(v, redact, depth + 1, active)
                )
                for k, v in obj.items()
            }
        items = [_copy(v, redact, depth + 1, active) for v in obj]
        if isinstance(obj, tuple):
            return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
        return items
    finally:
        active.discard(id(obj))
