"""Straight-line code for the reducer's small-layout step, made once per layout size.

A step of a small layout is about a dozen element-wise operations over ``m``
floats (``m`` ≤ :data:`ezpz.history.reduce.SMALL_LAYOUT`). As numpy calls each
costs about a microsecond of dispatch; as list comprehensions each costs a
loop, a frame and a list. Written out per element — ``d3 = x3 - s3`` — with
every value in a local variable, the same arithmetic is a third of the
comprehensions' time. Such code depends only on ``m``, so it is generated once
per size from the templates below and compiled (as :mod:`dataclasses` and
:func:`collections.namedtuple` build their methods); each layout then binds
its own buffers into two closures.

The operations and their order are those of ``Reducer._pack`` and
``Reducer._finish_fast`` (numpy), so the results are identical bit for bit;
``tests/mpi/test_reduce_mpi.py`` checks that every step, and
``tests/test_small_step.py`` checks the generated code against the formulas
on random data for m = 1, 3, 10 and 32.

``pack(xs, shift) -> bool`` fills the send buffers from this rank's values;
False (nothing packed) when a value is NaN/±inf or a square overflows: the
numpy path then handles the step. A value that is not a number raises
TypeError (or OverflowError for an int beyond float64), as arithmetic on it does.

``finish(shift, last, lin) -> (flat, mean, next_shift) | None`` reads the
receive buffers after the exchange: ``flat`` is mean, max, min and std in key
order; ``mean`` the means alone; ``next_shift`` the next step's shift
(``mean + (mean - last) * lin`` when ``lin`` is given: counter-like keys).
When the rounding guard flags a key (``M2 = S2 - S1²/n`` lost too many
digits) whose value every rank shares — a learning rate on a schedule, a
counter — its mean is that value and its std 0, as ``Reducer._fix_ill``
makes them; when it flags a key whose values differ, None: that step needs
re-shifted sums (another collective), the caller's general code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Pack = Callable[[list[Any], list[float]], bool]
Finish = Callable[
    [list[float], list[float], "list[float] | None"],
    "tuple[list[float], list[float], list[float]] | None",
]

_FACTORIES: dict[int, Callable[..., tuple[Pack, Finish]]] = {}


def _names(prefix: str, m: int) -> str:
    return ", ".join(f"{prefix}{i}" for i in range(m))


def _source(m: int) -> str:
    """The factory of one size: binds buffers and constants, returns (pack, finish)."""
    n = range(m)
    xs, ss = _names("x", m), _names("s", m)
    lines = [
        "def factory(pack_sum, sum_bytes, pack_max, max_bytes, fp, sums, maxes, size, keep):",
        "    inv = 1.0 / size",
        "    neg_fp = -fp",
        "",
        "    def pack(xs, shift):",
        f"        {xs}, = xs",
        f"        {ss}, = shift",
        *(f"        d{i} = x{i} - s{i}" for i in n),
        *(f"        e{i} = d{i} * d{i}" for i in n),
        # NaN/inf (and a square's overflow) poison the sum, as they do numpy's dot.
        f"        if not isfinite({' + '.join(f'e{i}' for i in n)}):",
        "            return False",
        f"        pack_sum(sum_bytes, 0, {_names('d', m)}, {_names('e', m)})",
        "        pack_max(max_bytes, 0, 0.0, fp, neg_fp, 0.0, 0.0, "
        f"{xs}, {', '.join(f'-x{i}' for i in n)})",
        "        return True",
        "",
        "    def finish(shift, last, lin):",
        f"        {_names('a', m)}, {_names('b', m)}, = sums.tolist()",
        f"        {ss}, = shift",
        *(f"        q{i} = a{i} * inv" for i in n),
        *(f"        t{i} = a{i} * q{i}" for i in n),
        f"        {_names('r', 2 * m)}, = maxes.tolist()",
        *(f"        u{i} = q{i} + s{i}" for i in n),
        # The rounding guard: M2 = S2 - S1²/n lost too many digits for some key.
        f"        if {' or '.join(f't{i} > b{i} * keep' for i in n)}:",
        # A key every rank logged the same value of (lr on a schedule, a counter)
        # is exact: mean = max, std 0. A key with a spread needs re-shifted sums.
        # As _fix_ill, the other keys' stds are sqrt(max(M2, 0) / n): M2 >= 0 (or
        # NaN) for a key the guard let pass, so max() is left out.
        *(
            line
            for i in n
            for line in (
                f"            if t{i} > b{i} * keep:",
                f"                if r{i} != -r{m + i}:",
                "                    return None",
                f"                u{i} = r{i}",
                f"                z{i} = 0.0",
                "            else:",
                f"                z{i} = sqrt((b{i} - t{i}) / size)",
            )
        ),
        f"            flat = [{_names('u', m)}, {_names('r', m)}, "
        f"{', '.join(f'-r{m + i}' for i in n)}, {_names('z', m)}]",
        "        else:",
        f"            flat = [{_names('u', m)}, {_names('r', m)}, "
        f"{', '.join(f'-r{m + i}' for i in n)}, "
        f"{', '.join(f'sqrt((b{i} - t{i}) * inv)' for i in n)}]",
        f"        mean = [{_names('u', m)}]",
        "        if lin is None:",
        "            return flat, mean, mean",
        f"        {_names('l', m)}, = last",
        f"        {_names('f', m)}, = lin",
        "        return flat, mean, [" + ", ".join(f"(u{i} - l{i}) * f{i} + u{i}" for i in n) + "]",
        "",
        "    return pack, finish",
    ]
    return "\n".join(lines) + "\n"


def make_small_step(
    m: int,
    *,
    pack_sum: Any,
    sum_bytes: Any,
    pack_max: Any,
    max_bytes: Any,
    fp: float,
    sums: Any,
    maxes: Any,
    size: float,
    keep: float,
) -> tuple[Pack, Finish]:
    """``pack`` and ``finish`` for a layout of ``m`` keys (``m`` >= 1).

    ``pack_sum``/``pack_max``: ``struct.Struct.pack_into`` of the SUM buffer's
    first ``2m`` doubles and of the MAX buffer; ``sum_bytes``/``max_bytes``:
    those buffers as bytes; ``fp``: the layout's fingerprint; ``sums``: the
    SUM receive buffer's first ``2m`` doubles (Σd, Σd²); ``maxes``: the MAX
    receive buffer after its header (max x, max -x); ``size``: the ranks;
    ``keep``: the rounding guard's factor.
    """
    factory = _FACTORIES.get(m)
    if factory is None:
        if m < 1:
            raise ValueError(f"a small step needs at least one key, got {m}")
        namespace: dict[str, Any] = {"isfinite": math.isfinite, "sqrt": math.sqrt}
        exec(compile(_source(m), f"<ezpz small step m={m}>", "exec"), namespace)
        factory = _FACTORIES[m] = namespace["factory"]
    return factory(pack_sum, sum_bytes, pack_max, max_bytes, fp, sums, maxes, size, keep)
