"""Metric key conventions: groups (``train/loss``) and statistic suffixes."""

from __future__ import annotations

from collections.abc import Collection, Iterable

# Suffixes History stores for every scalar key when statistics are on.
STAT_SUFFIXES: tuple[str, ...] = ("mean", "max", "min", "std")
# Optional suffixes the reducer may add (documented in docs/distributed.md).
EXTRA_STAT_SUFFIXES: tuple[str, ...] = ("count", "nonfinite", "max_rank", "min_rank")
ALL_STAT_SUFFIXES: frozenset[str] = frozenset(STAT_SUFFIXES + EXTRA_STAT_SUFFIXES)
# Reserved JSONL fields: a leading underscore keeps them clear of user keys.
STEP_FIELD = "_step"
TIME_FIELD = "_time"
# A JSONL line with this field is a lifecycle event (start, interrupted, ...), not a row.
EVENT_FIELD = "_event"
# Metric keys update() never records (normalize skips them with one warning):
# a metric under one of these names would collide with the JSONL's own fields.
RESERVED_KEYS: frozenset[str] = frozenset((STEP_FIELD, TIME_FIELD, EVENT_FIELD))

_split_cache: dict[str, tuple[str, str]] = {}


def split_group(key: str) -> tuple[str, str]:
    """``"train/loss"`` -> ``("train", "loss")``; ``"loss"`` -> ``("", "loss")``."""
    hit = _split_cache.get(key)
    if hit is None:
        head, sep, tail = key.partition("/")
        hit = (head, tail) if sep and head and tail else ("", key)
        if len(_split_cache) < 100_000:  # bounded: keys are few in practice
            _split_cache[key] = hit
    return hit


def join_key(group: str, name: str) -> str:
    return f"{group}/{name}" if group else name


def stat_bases(keys: Iterable[str]) -> set[str]:
    """The keys ``X`` that have a statistic ``X/mean`` (``max``/``min``/``std``) among ``keys``.

    Trackers send such an ``X`` (the rank's own value) as ``X/local``.
    """
    bases: set[str] = set()
    for key in keys:
        base, sep, suffix = key.rpartition("/")
        if sep and suffix in STAT_SUFFIXES:
            bases.add(base)
    return bases


def split_stat(name: str, names: Collection[str]) -> tuple[str, str] | None:
    """``("loss", "mean")`` when ``name`` is a statistic of a key in ``names``."""
    base, sep, suffix = name.rpartition("/")
    if sep and suffix in ALL_STAT_SUFFIXES and base in names:
        return base, suffix
    return None


def group_of(key: str, names: Collection[str]) -> tuple[str, str]:
    """``(group, name)`` a record key is stored under.

    A statistic lives in the group of its base key: with ``"train/loss"`` in
    ``names``, ``"train/loss/mean"`` -> ``("train", "loss/mean")``.
    """
    stat = split_stat(key, names)
    if stat is None:
        return split_group(key)
    group, name = split_group(stat[0])
    return group, f"{name}/{stat[1]}"
