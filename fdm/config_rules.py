"""Valid values of config keys, checked once when a config becomes a model family.

Every key a family reads is declared with its default in its base config builder
(configs/fdm_common.py for DDPM and FDM, configs/toy_scene.py:lifting_config for NeRF
lifting).
A family declares the valid values of those keys as `config_rules`, a mapping
{dotted key: Rule} built with the helpers below; `fdm.models.get_family` checks
them with `check` before anything runs or is written, and a bad value ends in one
line naming the key and what it allows (`UserError`, exit code 2 in main).

`fill_defaults` completes a config saved before a key existed from the family's
declared defaults (`fdm.api.load_config`). Imports nothing from models/train/run.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Mapping

import ml_collections

from fdm.errors import UserError


@dataclasses.dataclass(frozen=True)
class Rule:
    """allowed: what a valid value is, in words (the error's fix); ok(value, config):
    whether `value` of the key is valid in `config` (some bounds are other keys);
    bad: an invalid value, with `bad_with` ({dotted key: value}) the other keys that
    make it invalid (tests/test_config_keys.py sets them on every config)."""
    allowed: str
    ok: Callable[[Any, Any], bool]
    bad: Any
    bad_with: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def rule(ok: Callable[[Any], bool], allowed: str, bad: Any) -> Rule:
    """A Rule from a predicate of the value alone."""
    return Rule(allowed, lambda value, config: bool(ok(value)), bad)


def boolean() -> Rule:
    """True or False (not 0 / 1)."""
    return rule(lambda v: isinstance(v, bool), "True or False", None)


def one_of(*choices) -> Rule:
    """The value is one of `choices` (strings)."""
    return rule(lambda v: v in choices, f"one of {list(choices)}", "no_such_choice")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def int_at_least(n: int) -> Rule:
    """An integer >= n."""
    return rule(lambda v: _is_int(v) and v >= n, f"an integer >= {n}", n - 1)


def at_least(x: float) -> Rule:
    """A number >= x."""
    return rule(lambda v: _is_number(v) and v >= x, f"a number >= {x}", x - 1.0)


def above(x: float) -> Rule:
    """A number > x."""
    return rule(lambda v: _is_number(v) and v > x, f"a number > {x}", float(x))


def in_range(lo: float, hi: float, include_hi: bool = True) -> Rule:
    """A number in [lo, hi] (include_hi=False: [lo, hi))."""
    def ok(v):
        return _is_number(v) and lo <= v and (v <= hi if include_hi else v < hi)
    return rule(ok, f"a number in [{lo}, {hi}{']' if include_hi else ')'}", hi + 1.0)


def fraction() -> Rule:
    """A number in [0, 1)."""
    return in_range(0.0, 1.0, include_hi=False)


def timestep(inclusive: bool = False) -> Rule:
    """An integer t in [0, T) (inclusive: [0, T]) with T = diffusion.num_timesteps."""
    def ok(value, config):
        limit = int(config.diffusion.num_timesteps) + int(inclusive)
        return _is_int(value) and 0 <= value < limit
    close = "]" if inclusive else ")"
    return Rule(f"an integer in [0, diffusion.num_timesteps{close}", ok, -1)


def int_pair(ok: Callable[[int, int], bool], allowed: str, bad: tuple) -> Rule:
    """A pair of integers (a, b) with ok(a, b)."""
    def valid(v):
        return isinstance(v, (tuple, list)) and len(v) == 2 and all(map(_is_int, v)) and ok(*v)
    return rule(valid, allowed, bad)


def number_pair(ok: Callable[[float, float], bool], allowed: str, bad: tuple) -> Rule:
    """A pair of numbers (a, b) with ok(a, b)."""
    def valid(v):
        return (isinstance(v, (tuple, list)) and len(v) == 2 and all(map(_is_number, v))
                and ok(*v))
    return rule(valid, allowed, bad)


def lookup(config, key: str, missing: Any = None) -> Any:
    """config[key] for a dotted key ("model.num_masks"), `missing` when a part is absent."""
    node = config
    for part in key.split("."):
        if not isinstance(node, (Mapping, ml_collections.ConfigDict)) or part not in node:
            return missing
        node = node[part]
    return node


_MISSING = object()


def check(config, rules: Mapping[str, Rule]) -> None:
    """UserError naming the first key of `rules` whose value in `config` is invalid;
    keys `config` does not have are skipped (a rule of a key another family reads)."""
    for key, r in rules.items():
        value = lookup(config, key, _MISSING)
        if value is not _MISSING and not r.ok(value, config):
            raise UserError(f"{key}={_show(value)} is invalid; use {r.allowed}")


def _show(value) -> str:
    """A short one-line rendering of a config value."""
    return repr(tuple(value) if isinstance(value, list) else value)


def fill_defaults(config: ml_collections.ConfigDict,
                  defaults: ml_collections.ConfigDict) -> list[str]:
    """Adds to `config` (in place) every key of `defaults` it lacks, at any depth;
    returns the dotted keys added."""
    added = []
    for key, value in defaults.items():
        if key not in config:
            config[key] = value
            added.append(key)
        elif isinstance(value, ml_collections.ConfigDict) and \
                isinstance(config[key], ml_collections.ConfigDict):
            added += [f"{key}.{k}" for k in fill_defaults(config[key], value)]
    return added


__all__ = ["Rule", "above", "at_least", "check", "fill_defaults", "fraction", "in_range",
           "int_at_least", "int_pair", "lookup", "number_pair", "one_of", "rule", "timestep"]
