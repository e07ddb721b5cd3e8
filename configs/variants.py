"""`get_config(arg)` variants: `--config=configs/NAME.py:VARIANT` selects a named
modification of a config (big_vision style), so sizes of one experiment live in one
file instead of near-duplicate files."""
from typing import Callable, Mapping


def apply(config, variant: str, variants: Mapping[str, Callable]):
    """config after variants[variant](config) ('' = unchanged); ValueError naming the
    known variants otherwise."""
    if not variant:
        return config
    if variant not in variants:
        raise ValueError(f"unknown {config.name} config variant {variant!r}; use one of "
                         f"{[''] + sorted(variants)}")
    variants[variant](config)
    return config
