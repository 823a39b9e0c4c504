"""Typed readers for ezpz's environment variables, with one warning style.

Every ezpz setting that comes from the environment is read through these
functions, so they all behave the same way:

* an unset or empty (whitespace-only) variable means ``default``;
* a value that cannot be parsed, or is below ``minimum``, is logged as
  ``WARNING  NAME='value' is not <what>; using <default>`` and ``default`` is
  returned: a bad environment never stops a run;
* flags accept :data:`TRUTHY` (``1 true yes on``) and :data:`FALSY`
  (``0 false no off``), case-insensitively.

A bad *argument* passed in code is a different matter: callers raise
``ValueError`` for those. ``docs/environment.md`` lists every variable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TypeVar, overload

__all__ = ["FALSY", "TRUTHY", "env_flag", "env_float", "env_int", "env_str"]

logger = logging.getLogger(__name__)

#: strings read as "on" by :func:`env_flag` (after ``strip().lower()``)
TRUTHY: frozenset[str] = frozenset({"1", "true", "yes", "on"})
#: strings read as "off" by :func:`env_flag` (after ``strip().lower()``)
FALSY: frozenset[str] = frozenset({"0", "false", "no", "off"})

_T = TypeVar("_T")


def _raw(name: str, env: Mapping[str, str] | None) -> str:
    source = os.environ if env is None else env
    return (source.get(name) or "").strip()


def _warn(name: str, raw: str, what: str, default: object) -> None:
    """Log a bad value: ``NAME='raw' is not <what>; using <default>``."""
    logger.warning("%s=%r is not %s; using %s", name, raw, what, default)


def env_flag(name: str, default: bool = False, *, env: Mapping[str, str] | None = None) -> bool:
    """``name`` read as a boolean: :data:`TRUTHY` -> True, :data:`FALSY` -> False.

    Unset/empty gives ``default``; anything else is warned about and gives
    ``default``. ``env`` replaces ``os.environ`` (for tests and callers that
    carry their own mapping).
    """
    raw = _raw(name, env)
    if not raw:
        return default
    low = raw.lower()
    if low in TRUTHY:
        return True
    if low in FALSY:
        return False
    _warn(name, raw, "a boolean (1/true/yes/on or 0/false/no/off)", default)
    return default


def _env_number(
    name: str,
    default: object,
    parse: Callable[[str], float],
    what: str,
    minimum: float | None,
    env: Mapping[str, str] | None,
) -> object:
    """Shared body of :func:`env_int` / :func:`env_float`: parse, check, warn."""
    raw = _raw(name, env)
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        _warn(name, raw, what, default)
        return default
    if (
        value != value
        or value in (float("inf"), float("-inf"))
        or (minimum is not None and value < minimum)
    ):
        _warn(name, raw, what, default)
        return default
    return value


@overload
def env_int(
    name: str, default: int, *, minimum: int | None = None, env: Mapping[str, str] | None = None
) -> int: ...
@overload
def env_int(
    name: str, default: _T, *, minimum: int | None = None, env: Mapping[str, str] | None = None
) -> int | _T: ...
def env_int(
    name: str,
    default: object,
    *,
    minimum: int | None = None,
    env: Mapping[str, str] | None = None,
) -> object:
    """``name`` read as an integer ``>= minimum`` (when given), else ``default``.

    ``default`` may be None (meaning "not set"). A value such as ``"12.0"`` or
    ``"ten"`` is not an integer: warned about, ``default`` returned.
    """
    what = "an integer" if minimum is None else f"an integer >= {minimum}"
    return _env_number(name, default, int, what, minimum, env)


@overload
def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    env: Mapping[str, str] | None = None,
) -> float: ...
@overload
def env_float(
    name: str, default: _T, *, minimum: float | None = None, env: Mapping[str, str] | None = None
) -> float | _T: ...
def env_float(
    name: str,
    default: object,
    *,
    minimum: float | None = None,
    env: Mapping[str, str] | None = None,
) -> object:
    """``name`` read as a finite float ``>= minimum`` (when given), else ``default``.

    ``nan`` and ``inf`` are not accepted (warned about, ``default`` returned).
    """
    what = "a number" if minimum is None else f"a number >= {minimum:g}"
    return _env_number(name, default, float, what, minimum, env)


@overload
def env_str(name: str, default: str, *, env: Mapping[str, str] | None = None) -> str: ...
@overload
def env_str(
    name: str, default: None = None, *, env: Mapping[str, str] | None = None
) -> str | None: ...
def env_str(
    name: str, default: str | None = None, *, env: Mapping[str, str] | None = None
) -> str | None:
    """``name`` stripped of surrounding whitespace; unset or empty gives ``default``."""
    raw = _raw(name, env)
    return raw if raw else default
