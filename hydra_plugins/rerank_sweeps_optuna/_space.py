"""Hydra's override grammar <-> Optuna distributions, and suggested values back to overrides.

`choice(a,b)` and plain `a,b` lists become categorical, `range(...)` a stepped int or float
distribution (its stop is exclusive, as in Python), `interval(lo,hi)` a float distribution,
`int(interval(lo,hi))` an int one, and a `log` tag makes either log-scaled. Anything that is
not a sweep stays a fixed override and is passed to every trial unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from rerank_sweeps.config import ConfigError

_PRIMITIVES = (str, int, float, bool, type(None))


def distribution_from_override(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (`override.is_sweep_override()`)."""
    key = override.get_key_element()
    value = override.value()
    log = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        # shuffle(...) means nothing to a sampler; its random order would only make the
        # distribution (and the derived study name) differ from run to run.
        if isinstance(value, ChoiceSweep):
            choices = list(value.list)
        else:
            choices = sorted(override.sweep_iterator())
        for choice in choices:
            if not isinstance(choice, _PRIMITIVES):
                raise ConfigError(
                    f"{key}: choice values must be numbers, strings, booleans or null, "
                    f"not {type(choice).__name__} ({choice!r})"
                )
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{key}: choice values repeat ({override.input_line})")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        items = list(override.sweep_iterator())
        if not items:
            raise ConfigError(f"{key}: {override.input_line} is empty")
        step = value.step
        if step is None or step <= 0:
            raise ConfigError(f"{key}: range(...) needs a positive step here")
        if len(items) == 1:
            return CategoricalDistribution(items)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (value.start, step)):
            if log and step != 1:
                raise ConfigError(f"{key}: a log-scaled range needs step 1")
            return IntDistribution(int(items[0]), int(items[-1]), log=log, step=int(step))
        if log:
            raise ConfigError(f"{key}: a log-scaled float range is not supported; use interval")
        return FloatDistribution(float(items[0]), float(items[-1]), step=float(step))
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        if start is None or end is None or not start < end:
            raise ConfigError(f"{key}: {override.input_line} needs a lower bound below the upper")
        if log and start <= 0:
            raise ConfigError(f"{key}: a log-scaled interval needs a lower bound > 0")
        if isinstance(start, int) and isinstance(end, int):
            return IntDistribution(start, end, log=log)
        return FloatDistribution(float(start), float(end), log=log)
    raise ConfigError(f"{key}: the Optuna sweeper does not support {override.input_line}")


def parse_search_space(
    overrides: Sequence[str],
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Split override strings into a search space {key: distribution} and fixed overrides.

    A later override of the same key replaces an earlier one, so a command-line `x=1`
    pins a parameter that `hydra.sweeper.params` would otherwise search.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as err:  # Hydra's grammar errors come in several types
        raise ConfigError(" ".join(str(err).split())) from None
    entries: dict[str, BaseDistribution | str] = {}
    for override in parsed:
        key = override.get_key_element()
        entries.pop(key, None)  # keep the latest definition, in its position
        if override.is_sweep_override():
            entries[key] = distribution_from_override(override)
        else:
            entries[key] = override.input_line
    space = {k: v for k, v in entries.items() if isinstance(v, BaseDistribution)}
    fixed = [v for v in entries.values() if isinstance(v, str)]
    return space, fixed


def _quote(text: str) -> str:
    # Hydra's quoted strings: a quote is escaped by a backslash, and backslashes only need
    # doubling where they precede a quote or the closing quote.
    body = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text)
    return f"'{body}'"


def _parses_to(line: str, value: Any) -> bool:
    try:
        parsed = OverridesParser.create().parse_override(line).value()
    except Exception:  # not valid grammar
        return False
    if isinstance(value, float) and isinstance(parsed, float) and math.isnan(value):
        return math.isnan(parsed)
    return type(parsed) is type(value) and parsed == value


def format_override(key: str, value: Any) -> str:
    """`key=value` in Hydra's grammar such that Hydra parses it back to exactly `value`."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    line = f"{key}={text}"
    if _parses_to(line, value):
        return line
    if isinstance(value, str):
        line = f"{key}={_quote(value)}"
        if _parses_to(line, value):
            return line
    raise ConfigError(f"{key}: the value {value!r} cannot be written as a Hydra override")


def grid_values(key: str, distribution: BaseDistribution) -> list[Any]:
    """Every value of a discrete distribution, for Optuna's GridSampler."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        count = round((distribution.high - distribution.low) / distribution.step) + 1
        # Rounded: low + i * step drifts (0.30000000000000004) off the distribution's own grid.
        return [round(distribution.low + i * distribution.step, 12) for i in range(count)]
    raise ConfigError(
        f"{key}: the grid sampler needs discrete values: use choice(...), a,b,c or range(...)"
    )
