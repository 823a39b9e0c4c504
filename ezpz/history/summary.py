"""The one-line console summary that ``History.update()`` returns.

``iter=180 loss=0.078(± 0.026) accuracy=0.984(±9.9e-3) lr=0.000059 memory=0.01/0.01GiB (0%)``

Two entry points share the same rules:

* :func:`format_compact_summary` - stateless, for any mapping of values.
* :class:`SummaryFormatter` - what ``History`` holds: it derives the column
  layout once per key tuple and afterwards only formats numbers, and it
  remembers how wide each counter has been so that columns never shift back.

The rules, and why, are in ``docs/console-summary.md``.
"""

from __future__ import annotations

import logging
import math
import operator
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ezpz.history.summary_line import Render, make_render

__all__ = [
    "COUNTER_KEYS",
    "HYPERPARAMETER_KEYS",
    "MEMORY_KEYS",
    "SummaryFormatter",
    "format_compact_summary",
    "format_std",
    "format_value",
]

logger = logging.getLogger(__name__)

# Counter-like keys (also as the last path component: ``train/iter``): bare, padded.
COUNTER_KEYS: frozenset[str] = frozenset({"iter", "step", "epoch", "batch", "idx"})
# Replicated hyperparameters: identical on every rank, so their std is noise.
HYPERPARAMETER_KEYS: frozenset[str] = frozenset(
    {
        "lr",
        "learning_rate",
        "momentum",
        "weight_decay",
        "beta1",
        "beta2",
        "eps",
        "epsilon",
        "clip_grad",
        "grad_clip",
        "max_grad_norm",
        "warmup_steps",
        "dropout",
        "batch_size",
        "global_batch_size",
        "micro_batch_size",
        "grad_accum_steps",
        "gradient_accumulation_steps",
    }
)
# get_memory_metrics() keys, collapsed into one ``memory=`` token.
MEMORY_KEYS: tuple[str, ...] = ("mem_alloc", "mem_peak_alloc", "mem_reserved", "mem_peak_reserved")
# ``X/<suffix>`` companions of a base key ``X`` that the console leaves out.
_COMPANION_SUFFIXES: frozenset[str] = frozenset(
    {"mean", "max", "min", "std", "avg", "count", "nonfinite", "max_rank", "min_rank"}
)

STD_WIDTH = 6  # the std column: ``(± 0.026)``, ``(±9.9e-3)``, ``(±  0.12)``
LARGE = 1e15  # |value| at or above this prints in scientific notation
_MAX_TINY_DECIMALS = 12  # below 1e-11 a value that rounds to 0 goes scientific
_INF = math.inf


# Field kinds in a layout.
_METRIC, _COUNTER, _BARE, _MEMORY = range(4)


# -- numbers -------------------------------------------------------------
def _nonfinite(v: float) -> str:
    if v != v:
        return "nan"
    return "inf" if v > 0 else "-inf"


def _scientific(v: float, decimals: int) -> str:
    """``1.5e+300``, ``5.1e-4``: Python's exponent with its leading zero stripped."""
    text = format(v, f".{decimals}e")
    # Python writes at least two exponent digits ("e-04"); keep only the significant ones.
    if text[-2] == "0" and text[-3] in "+-":
        text = text[:-2] + text[-1]
    return text


def _fixed(v: float, decimals: int) -> str:
    """Fixed point with ``decimals``, bounded: non-finite and huge values stay short."""
    if -LARGE < v < LARGE:
        return f"{v:.{decimals}f}"
    # at least 2 significant figures, even at 0 decimals
    return _nonfinite(v) if not math.isfinite(v) else _scientific(v, max(decimals, 1))


def format_value(v: float, precision: int = 6) -> str:
    """A metric value: ``precision`` decimals, with two bounded exceptions.

    * ``|v| >= 1e15``: scientific with ``precision`` decimals (``1.000000e+300``;
      at least one),
      so a diverging loss never prints a 300-character number.
    * a non-zero value that would round to zero at ``precision`` decimals gets
      just enough decimals for 2 significant figures (``lr=0.000059`` at
      precision 3), or 2-figure scientific notation below ``1e-11``.

    ``nan``, ``inf`` and ``-inf`` print as such; ``-0.0`` prints like ``0.0``.
    """
    small = 0.5 * 10.0**-precision
    a = abs(v)
    if small <= a < LARGE:
        return f"{v:.{precision}f}"
    if a == 0:
        return f"{0.0:.{precision}f}"
    if a < small:
        decimals = 1 - math.floor(math.log10(a))
        if decimals <= _MAX_TINY_DECIMALS:
            return f"{v:.{decimals}f}"
        return _scientific(v, 1)
    return _fixed(v, precision)  # huge or non-finite


def format_std(s: float) -> str:
    """A std: 2 significant figures, fixed point for 0.01 <= |s| < 100.

    ``0.16``, ``0.020``, ``1.3``, ``12``; below 0.01 scientific with the
    exponent's leading zero stripped (``5.1e-4``), and likewise from 100 up
    (``1.2e+3``). The range is decided on the value rounded to 2 figures, so
    ``0.00999`` prints ``0.010`` and ``99.7`` prints ``1.0e+2``. Zero prints
    ``0``; ``nan``/``inf``/``-inf`` print as such.
    """
    a = s if s >= 0 else -s
    # Bounds are where 2-figure rounding changes the number of decimals.
    if 0.00995 <= a < 99.5:
        if a < 0.0995:
            return format(s, ".3f")
        if a < 0.995:
            return format(s, ".2f")
        return format(s, ".1f") if a < 9.95 else format(s, ".0f")
    if s == 0:
        return "0"
    if not math.isfinite(s):
        return _nonfinite(s)
    return _scientific(s, 1)


def _format_counter(v: float, precision: int) -> str:
    """Counters print as integers when they are (nearly) integral."""
    if math.isfinite(v) and abs(v) < LARGE:
        whole = round(v)
        # A cross-rank mean of identical ints can be off by an ulp.
        if abs(v - whole) <= 1e-9 * max(1.0, abs(v)):
            return str(int(whole))
    return format_value(v, precision)


def _counter_width(text_len: int) -> int:
    """Counter columns grow in steps of 3 characters (min 3).

    Rows 0..999 share one column, 1000..999999 the next, so even the stateless
    function keeps ``iter=8`` and ``iter=180`` aligned.
    """
    return max(3, -(-text_len // 3) * 3)


def _device_total_gib() -> float | None:
    """The device's total memory, only if ezpz.memory has already been imported.

    Importing ezpz.memory here could import torch; the console never does that.
    """
    memory = sys.modules.get("ezpz.memory")
    probe = getattr(memory, "last_device_total_gib", None)
    if probe is None:
        return None
    try:
        total = probe()
    except Exception:  # a probe failure must never break the summary
        return None
    if total is None:
        return None
    try:
        total = float(total)
    except (TypeError, ValueError):
        return None
    return total if math.isfinite(total) and total > 0 else None


def _format_memory(
    alloc: float | None, reserved: float | None, peak: float | None, total: float | None
) -> str:
    """``0.01/0.01GiB (0%)``; unknown parts print ``?``; no total -> no ``(peak%)``."""
    a = "?" if alloc is None else _fixed(alloc, 2)
    r = "?" if reserved is None else _fixed(reserved, 2)
    if peak is None or total is None:
        return f"{a}/{r}GiB"
    return f"{a}/{r}GiB ({_fixed(100.0 * peak / total, 0)}%)"


# -- values of any type ----------------------------------------------------
def _as_scalar(v: Any) -> float | str | None:
    """A float for numbers (numpy scalars, 0-d or one-element arrays/tensors),
    the string itself for strings, None for anything else (left out)."""
    if isinstance(v, (float, str)):
        return v
    try:
        if isinstance(v, int):  # bool included
            return float(v)
        numel = getattr(v, "numel", None)  # torch tensors: .size is a method
        size = numel() if callable(numel) else getattr(v, "size", 1)
        if size != 1:
            return None  # vectors are plotted, not summarised
        item = getattr(v, "item", None)  # one-element arrays/tensors, numpy scalars
        return float(item() if callable(item) else v)
    except OverflowError:  # an int beyond float range
        return _INF if v > 0 else -_INF
    except Exception:  # None, objects, lists: not part of the line
        return None


# -- layout ----------------------------------------------------------------
def _last_component(key: str) -> str:
    return key.rpartition("/")[2]


def _memory_parts(key: str) -> tuple[str, str] | None:
    """``"train/mem_alloc"`` -> ``("train/", "mem_alloc")``."""
    for name in MEMORY_KEYS:
        if key.endswith(name):
            prefix = key[: -len(name)]
            if not prefix or prefix.endswith(("/", "_", ".")):
                return prefix, name
    return None


# A field is one token of the line: (kind, "label=", value key, std key, memory keys).
# memory keys: (alloc, reserved, peak) value keys, for the one ``memory=`` token.
_Field = tuple[int, str, str, "str | None", "tuple[str | None, str | None, str | None] | None"]


def _prefer_mean(key: str, present: set[str]) -> str:
    """The cross-rank mean when present: the line is then identical on every rank."""
    mean = f"{key}/mean"
    return mean if mean in present else key


def _build_layout(keys: tuple[str, ...], constants: frozenset[str] = frozenset()) -> list[_Field]:
    """Decide once, from the keys alone, which tokens the line has, in key order.

    ``constants``: extra key names (last component) shown bare, like hyperparameters.
    """
    present = set(keys)
    fields: list[list[Any]] = []
    memory_groups: dict[str, dict[str, str]] = {}  # prefix -> {"mem_alloc": key, ...}
    for key in keys:
        base, sep, suffix = key.rpartition("/")
        if sep and suffix in _COMPANION_SUFFIXES and base in present:
            continue  # a statistic of `base`: shown through base's token
        mem = _memory_parts(key)
        if mem is not None:
            prefix, name = mem
            if prefix not in memory_groups:
                memory_groups[prefix] = {}
                fields.append([_MEMORY, f"{prefix}memory=", prefix, None, None])
            memory_groups[prefix][name] = key
            continue
        value_key = _prefer_mean(key, present)
        last = _last_component(key)
        if last in COUNTER_KEYS:
            fields.append([_COUNTER, f"{key}=", value_key, None, None])
        elif last in HYPERPARAMETER_KEYS or last in constants:
            fields.append([_BARE, f"{key}=", value_key, None, None])
        else:
            std_key = f"{key}/std" if f"{key}/std" in present else None
            fields.append([_METRIC, f"{key}=", value_key, std_key, None])
    for field in fields:
        if field[0] == _MEMORY:
            names = memory_groups[field[2]]
            alloc, reserved, peak = (
                names.get(n) for n in ("mem_alloc", "mem_reserved", "mem_peak_alloc")
            )
            # peak% is about OOM risk, so it shows the worst rank's peak when known.
            peak_key = None
            if peak is not None:
                peak_key = f"{peak}/max" if f"{peak}/max" in present else peak
            field[4] = (
                None if alloc is None else _prefer_mean(alloc, present),
                None if reserved is None else _prefer_mean(reserved, present),
                peak_key,
            )
            field[2] = ""
    return [(f[0], f[1], f[2], f[3], f[4]) for f in fields]


# -- the formatter -----------------------------------------------------------
class SummaryFormatter:
    """Formats ``History.update()``'s console line; one instance per History.

    The layout (which keys become which tokens) is recomputed only when the
    tuple of keys changes; every other call just formats numbers. Counter
    columns remember the widest value seen so that columns never move back.
    """

    def __init__(self, precision: int = 6) -> None:
        self._keys: tuple[str, ...] | None = None
        self._layout: list[_Field] = []
        # Lines of metric (with or without std) and counter tokens: see _set_layout.
        self._fast: Render | None = None
        self._counter_widths: dict[str, int] = {}
        self._set_precision(precision)

    def _set_precision(self, precision: Any) -> None:
        self.precision = _check_precision(precision)
        self._spec = f".{self.precision}f"
        self._small = 0.5 * 10.0**-self.precision  # below this, a value rounds to 0
        # How a value that rounds to zero looks after its label in a %-template line.
        zero = f"{0.0:.{self.precision}f}"
        self._zeros = (f"={zero}", f"=-{zero}")
        self._keys = None  # the plain template embeds the precision

    def _set_layout(self, keys: tuple[str, ...]) -> None:
        self._layout = _build_layout(keys)
        self._keys = keys
        self._fast = None
        fields = self._layout
        if fields and all(f[0] != _MEMORY for f in fields):
            self._fast = _line_render(fields, self)

    def format(
        self,
        metrics: Mapping[str, Any],
        precision: int | None = None,
        *,
        plain_numbers: bool = False,
        keys: tuple[str, ...] | None = None,
    ) -> str:
        """The summary line for one step's ``metrics`` (raw values and stats).

        ``plain_numbers=True`` is the caller's promise that every value is a
        Python ``float`` or ``int`` (``History``'s own records): the per-call
        type check is then skipped. ``keys``, when given, is the caller's
        promise that it equals ``tuple(metrics)`` (History passes its layout's
        key tuple, the same object every step). The text is the same either way.
        """
        if precision is not None and precision != self.precision:
            self._set_precision(precision)
        if keys is None:
            keys = tuple(metrics)
        if keys is not self._keys and keys != self._keys:
            self._set_layout(keys)
        if self._fast is not None:
            line = self._fast(metrics, plain_numbers)
            if line is not None:
                return line
        try:
            return self._render_numbers(metrics, self._layout)
        except Exception:
            # A value that is not a plain number (array, tensor, string, None):
            # the tolerant path converts each value; slower, never raises.
            return self._render(metrics, self._layout)

    def _render_numbers(self, metrics: Mapping[str, Any], layout: list[_Field]) -> str:
        """Hot path: every value is a number (float, int, numpy scalar)."""
        spec, small, precision = self._spec, self._small, self.precision
        parts: list[str] = []
        append = parts.append
        for kind, label, value_key, std_key, memory_keys in layout:
            if kind == _MEMORY:
                append(label + self._memory_text(metrics, memory_keys))  # type: ignore[arg-type]
                continue
            v = metrics[value_key]
            if type(v) is not float and not isinstance(v, (float, int)):
                v = _number(v)  # numpy scalars; raises for anything else
            if kind == _COUNTER:
                append(self._counter_text(label, v))
                continue
            text = format(v, spec) if small <= abs(v) < LARGE else format_value(v, precision)
            if std_key is None:
                append(label + text)
            else:
                s = metrics[std_key]
                if type(s) is not float and not isinstance(s, (float, int)):
                    s = _number(s)
                append(f"{label}{text}(±{format_std(s):>6})")  # 6 == STD_WIDTH
        return " ".join(parts).rstrip()

    def _render(self, metrics: Mapping[str, Any], layout: list[_Field]) -> str:
        """Tolerant path: any values; non-numbers are shown as text or left out."""
        precision = self.precision
        parts: list[str] = []
        for kind, label, value_key, std_key, memory_keys in layout:
            if kind == _MEMORY:
                parts.append(label + self._memory_text(metrics, memory_keys, _as_scalar))  # type: ignore[arg-type]
                continue
            v = _as_scalar(metrics[value_key])
            if v is None:
                continue
            if isinstance(v, str):
                parts.append(label + v)
            elif kind == _COUNTER:
                parts.append(self._counter_text(label, v))
            else:
                text = format_value(v, precision)
                s = None if std_key is None else _as_scalar(metrics[std_key])
                if isinstance(s, float):
                    text = f"{text}(±{format_std(s):>{STD_WIDTH}})"
                parts.append(label + text)
        return " ".join(parts).rstrip()

    def _counter_text(self, label: str, v: Any) -> str:
        """``iter=8  ``: the counter, padded to a column that only ever grows."""
        return label + self._counter_value(label, v)

    def _counter_value(self, label: str, v: Any) -> str:
        """``8  ``: the counter's text padded to its column (see :meth:`_counter_text`)."""
        text = _format_counter(float(v), self.precision)
        widths = self._counter_widths
        width = widths.get(label, 0)
        if len(text) > width:
            width = widths[label] = _counter_width(len(text))
        return text.ljust(width)

    @staticmethod
    def _memory_text(
        metrics: Mapping[str, Any],
        memory_keys: tuple[str | None, str | None, str | None],
        convert: Any = None,
    ) -> str:
        values: list[float | None] = []
        for key in memory_keys:
            v = None if key is None else metrics[key]
            if convert is not None and v is not None:
                v = convert(v)
                v = v if isinstance(v, float) else None
            values.append(None if v is None else float(v))
        return _format_memory(values[0], values[1], values[2], _device_total_gib())


def _line_render(fields: list[_Field], owner: SummaryFormatter) -> Render:
    """The %-templates of a line of metric (± std) and counter tokens, and its renderer.

    Each token is one piece: ``label%.6f`` for a value, ``label%.6f(±%6s)``
    for a value with its std as text (``%6.*f``, decimals then std, in the
    fixed-point template), ``label%s`` for a counter's padded text.
    """
    precision = owner.precision
    shape: list[str] = []
    value_keys: list[str] = []
    std_keys: list[str] = []
    counter_keys: list[str] = []
    counter_labels: list[str] = []
    pieces: list[str] = []
    fixed: list[str] = []  # the same line with every std in fixed point
    for kind, label, value_key, std_key, _memory in fields:
        text = label.replace("%", "%%")
        if kind == _COUNTER:
            shape.append("c")
            counter_keys.append(value_key)
            counter_labels.append(label)
            pieces.append(f"{text}%s")
            fixed.append(f"{text}%s")
            continue
        value_keys.append(value_key)
        if std_key is None:
            shape.append("v")
            pieces.append(f"{text}%.{precision}f")
            fixed.append(f"{text}%.{precision}f")
        else:
            shape.append("s")
            std_keys.append(std_key)
            pieces.append(f"{text}%.{precision}f(±%{STD_WIDTH}s)")
            fixed.append(f"{text}%.{precision}f(±%{STD_WIDTH}.*f)")
    return make_render(
        "".join(shape),
        trail=fields[-1][0] == _COUNTER,  # a padded counter last: strip the padding
        value_keys=value_keys,
        std_keys=std_keys,
        counter_keys=counter_keys,
        counter_labels=counter_labels,
        template=" ".join(pieces),
        template_fixed=" ".join(fixed),
        counter_value=owner._counter_value,
        small=owner._small,
        zeros=owner._zeros,
        large=LARGE,
        format_std=format_std,
    )


def _number(v: Any) -> float:
    """numpy scalars and 0-d arrays to float; anything else raises."""
    if isinstance(v, (str, bytes)) or getattr(v, "ndim", 0) != 0:
        raise TypeError(type(v).__name__)
    return float(v)


def _check_precision(precision: Any) -> int:
    try:
        value = operator.index(precision)
    except TypeError:
        raise TypeError(f"precision must be an int, got {type(precision).__name__}") from None
    if value < 0:
        raise ValueError(f"precision must be >= 0, got {value}")
    return value


def format_compact_summary(
    metrics: Mapping[str, Any],
    precision: int = 6,
    constant_keys: Iterable[str] = (),
    min_widths: Mapping[str, int] | None = None,
) -> str:
    """One console line for ``metrics``; never raises for any values.

    Stateless: counters are padded to the next multiple of 3 characters, so
    ``iter=8`` and ``iter=180`` still align. Values that are neither numbers
    nor strings (vectors, None, objects) are left out of the line.
    ``constant_keys`` (names, as the last ``/`` component) print bare like the
    built-in hyperparameters; ``min_widths`` (``{"iter": 10}``, ezpz 0.26)
    pads a counter's token, label included, to at least that many characters.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
    formatter = SummaryFormatter(precision)
    clean = {str(k): v for k, v in metrics.items()}
    layout = _build_layout(tuple(clean), frozenset(constant_keys))
    if min_widths:
        for kind, label, *_ in layout:
            want = min_widths.get(_last_component(label[:-1]))
            if kind == _COUNTER and want is not None:
                formatter._counter_widths[label] = max(0, int(want) - len(label))
    return formatter._render(clean, layout)
