"""fdm.trees: "a/b/c" flattening of nested parameter dicts and key mismatches."""
import numpy as np

from fdm.trees import flatten, key_mismatch, unflatten


def test_flatten_and_unflatten_are_inverse():
    tree = {"a": {"b": np.zeros(2), "c": {"d": 1}}, "e": 3.0}
    flat = flatten(tree)
    assert flat.keys() == {"a/b", "a/c/d", "e"}
    assert unflatten(flat)["a"]["c"]["d"] == 1 and unflatten(flat)["e"] == 3.0


def test_key_mismatch_names_missing_and_unexpected_keys():
    assert key_mismatch({"a": 1, "b": 2}, {"b": 0, "a": 0}) == ""
    assert key_mismatch({"a": 1, "b": 2}, {"b": 0, "z": 0}) == \
        "1 missing (e.g. a) and 1 unexpected (e.g. z)"
