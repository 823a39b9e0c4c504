"""The console line's hot path: one ``%``-template and straight-line code per line shape.

A line of metric tokens (``loss=0.078(± 0.026)``, ``lr=0.000059``) and
counter tokens (``iter=180``) is, per step, a dozen checks and one ``%``
over its values. Written as generic code those checks are ``min``/``max``
passes, comprehensions and tuple shuffles that cost as much as the ``%``
itself; written out per token, with every value in a local variable, they
cost half (the 10-metric line with stds: 4.2 µs against 5.4). That code
depends only on the line's *shape* — the kinds of its tokens in order
(``"s"``: value ± std, ``"v"``: value, ``"c"``: counter) — so it is
generated once per shape and compiled (as :mod:`dataclasses` builds its
methods: ~2 ms for 10 tokens, ~50 ms for 200, once); each key tuple then
binds its keys and templates into a closure.

``render(metrics, plain_numbers) -> str | None`` gives the text
``SummaryFormatter._render_numbers`` would give, or None when some value is
outside what the template prints the same way (``|v| >= 1e15``, NaN, a
value that rounds to zero, a value that is not a plain number): the general
path then decides. ``tests/test_summary_props.py`` compares the two on
random lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

Render = Callable[[Mapping[str, Any], bool], "str | None"]

_number_types = frozenset((float, int))
_FACTORIES: dict[str, Callable[..., Render]] = {}
_MAX_SHAPES = 256  # distinct line shapes kept compiled


def _decimals(s: str) -> str:
    """format_std's decimals for a std in its fixed-point range [0.00995, 99.5)."""
    return f"3 if {s} < 0.0995 else 2 if {s} < 0.995 else 1 if {s} < 9.95 else 0"


def _source(shape: str, trail: bool) -> str:
    values = [f"v{i}" for i in range(len(shape) - shape.count("c"))]
    stds = [f"s{i}" for i in range(shape.count("s"))]
    counters = [f"c{i}" for i in range(shape.count("c"))]
    fixed_args: list[str] = []  # the fixed-point template's arguments, in token order
    text_args: list[str] = []  # the other template's (stds as format_std's text)
    vi = si = ci = 0
    for kind in shape:
        if kind == "c":
            fixed_args.append(f"c{ci}")
            text_args.append(f"c{ci}")
            ci += 1
            continue
        fixed_args.append(f"v{vi}")
        text_args.append(f"v{vi}")
        vi += 1
        if kind == "s":
            fixed_args += [f"({_decimals(f's{si}')})", f"s{si}"]
            text_args.append(f"format_std(s{si})")
            si += 1
    every = values + stds + counters
    lines = [
        "def factory(value_keys, std_keys, counter_keys, counter_labels, template, "
        "template_fixed, counter_value, small, zeros, LARGE, format_std):",
        # One C call fetches every value (a tuple, as the line has 2 or more).
        "    fetch = itemgetter(*value_keys, *std_keys, *counter_keys)",
        *(f"    cl{i} = counter_labels[{i}]" for i in range(len(counters))),
        "    zero, neg_zero = zeros",
        "",
        "    def render(metrics, plain_numbers):",
        f"        {', '.join(every)}, = fetch(metrics)"
        if len(every) > 1
        else f"        {every[0]} = fetch(metrics)",
        "        if not plain_numbers and not ("
        + " and ".join(f"type({v}) in number_types" for v in every)
        + "):",
        "            return None",
    ]
    if values:
        # Positive values in range (the usual line) pass one comparison each; else
        # the range check, and after formatting a look for values that round to
        # zero ("=0.000", "=-0.000"). NaN fails both: the general path prints it.
        lines += [
            "        near_zero = False",
            "        if not (" + " and ".join(f"small <= {v} < LARGE" for v in values) + "):",
            "            if not (" + " and ".join(f"-LARGE < {v} < LARGE" for v in values) + "):",
            "                return None",
            "            near_zero = True",
        ]
    lines += [f"        c{i} = counter_value(cl{i}, c{i})" for i in range(len(counters))]
    if stds:
        lines += [
            "        if " + " and ".join(f"0.00995 <= {s} < 99.5" for s in stds) + ":",
            f"            line = template_fixed % ({', '.join(fixed_args)},)",
            "        else:",
            f"            line = template % ({', '.join(text_args)},)",
        ]
    else:
        lines.append(f"        line = template % ({', '.join(text_args)},)")
    if values:
        lines += [
            "        if near_zero and (zero in line or neg_zero in line):",
            "            return None",
        ]
    lines += [
        "        return line.rstrip()" if trail else "        return line",
        "",
        "    return render",
    ]
    return "\n".join(lines) + "\n"


def make_render(
    shape: str,
    *,
    trail: bool,
    value_keys: list[str],
    std_keys: list[str],
    counter_keys: list[str],
    counter_labels: list[str],
    template: str,
    template_fixed: str,
    counter_value: Callable[[str, Any], str],
    small: float,
    zeros: tuple[str, str],
    large: float,
    format_std: Callable[[float], str],
) -> Render:
    """The renderer of one key tuple's line; see the module docstring.

    ``shape``: one letter per token (``s``, ``v``, ``c``); ``trail``: the last
    token is a padded counter (its padding is stripped). ``template`` takes
    stds as text (``%6s``), ``template_fixed`` takes each std as decimals and
    value (``%6.*f``); both take counters as text from ``counter_value``.
    ``small``: below this magnitude a value rounds to zero; ``zeros``: how
    such a value looks after its label; ``large``: from this magnitude up a
    value prints in scientific notation; ``format_std``: a std's text.
    """
    key = f"{shape}/{int(trail)}"
    factory = _FACTORIES.get(key)
    if factory is None:
        if not shape or set(shape) - set("svc"):
            raise ValueError(f"not a line shape: {shape!r}")
        namespace: dict[str, Any] = {"number_types": _number_types, "itemgetter": itemgetter}
        exec(compile(_source(shape, trail), f"<ezpz summary line {key}>", "exec"), namespace)
        if len(_FACTORIES) >= _MAX_SHAPES:
            _FACTORIES.clear()
        factory = _FACTORIES[key] = namespace["factory"]
    return factory(
        value_keys,
        std_keys,
        counter_keys,
        counter_labels,
        template,
        template_fixed,
        counter_value,
        small,
        zeros,
        large,
        format_std,
    )
