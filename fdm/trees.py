"""Nested parameter dicts <-> flat dicts keyed by "a/b/c" paths (weight files, .npz,
checkpoints), and what differs between two such trees (for error messages)."""
from __future__ import annotations

from typing import Any, Mapping


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a/b/c": leaf}; empty sub-mappings vanish."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        flat.update(flatten(value, name) if isinstance(value, Mapping) else {name: value})
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict:
    """{"a/b/c": leaf} -> nested dict (the inverse of `flatten`)."""
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def key_mismatch(want: Mapping[str, Any], got: Mapping[str, Any]) -> str:
    """'' when `got` has exactly the keys of `want`, else e.g. "2 missing (e.g. a/b) and
    1 unexpected (e.g. c)" for an error message."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    return " and ".join(f"{len(keys)} {what} (e.g. {keys[0]})"
                        for what, keys in (("missing", missing), ("unexpected", extra)) if keys)


def shape_mismatch(want: Mapping[str, tuple], got: Mapping[str, Any]) -> str:
    """'' when `got` ({path: array}) has exactly the keys of `want` ({path: shape}) with
    those shapes, else the first difference: the keys' (`key_mismatch`) or e.g.
    "a/b has shape (3,), not (4,)"."""
    return key_mismatch(want, got) or next(
        (f"{k} has shape {tuple(got[k].shape)}, not {tuple(want[k])}" for k in want
         if tuple(got[k].shape) != tuple(want[k])), "")
