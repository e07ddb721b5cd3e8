"""Config keys: declared once (no `.get(key, default)` on configs in fdm/), every value
checked against its family's rules with a one-line error, old configs completed.

Every config of configs/ is walked with every variant (`configs/variants.py`), and for
each key with a rule (`ModelFamily.config_rules`, `fdm.config_rules`) a bad value is
set: `fdm.models.check_config` must end in one UserError line naming the key.
"""
from __future__ import annotations

import ast
import importlib
import json
import pathlib

import pytest

from fdm import api, config_rules
from fdm.errors import UserError
from fdm.models import check_config, family_class

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_CONFIGS = {"__init__", "variants", "fdm_common"}
# Deliberate `.get` reads of config-like objects in fdm/ (file, function or "*": reason).
EXCEPTIONS = {
    ("fdm/data/__init__.py", "_option"): "a dataset's own keys are declared with their "
                                         "defaults in its fdm.data.DATASETS entry",
    ("fdm/nn/convert_diffusers.py", "*"): "reads a diffusers config.json, not our config",
    ("fdm/seed_study.py", "recorded"): "reads the config.json an earlier run wrote, "
                                       "which may lack the key",
}
CONFIG_PARAMS = {"config", "cfg", "c", "d", "e", "m", "tc"}


def _config_modules() -> list[str]:
    return sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem not in NOT_CONFIGS)


def _variants(module) -> list[str]:
    """'' and the names `variants.apply` lists for an unknown variant of `module`."""
    try:
        module.get_config("no_such_variant")
    except TypeError:            # get_config() takes no variant
        return [""]
    except ValueError as e:
        return ast.literal_eval(str(e).split("use one of ", 1)[1])
    raise AssertionError(f"{module.__name__} accepted an unknown variant")


def all_configs() -> list[tuple[str, str]]:
    """(module, variant) of every config in configs/."""
    out = []
    for name in _config_modules():
        module = importlib.import_module(f"configs.{name}")
        out += [(name, v) for v in _variants(module)]
    return out


def load(name: str, variant: str):
    get_config = importlib.import_module(f"configs.{name}").get_config
    return get_config(variant) if variant else get_config()


# ------------------------------------------------------ no config.get in fdm/


def _is_config_expr(node: ast.AST, names: set[str]) -> bool:
    """Whether `node` (a .get receiver) reads a config: a name bound from one, a config
    parameter, or an attribute chain through `config` / `cfg`."""
    text = ast.unparse(node)
    return (isinstance(node, ast.Name) and node.id in names) or "config" in text or "cfg" in text


def _config_names(func: ast.AST) -> set[str]:
    """Names in `func` that hold a config section: config-like parameters and names
    assigned from an expression that mentions config."""
    names = {a.arg for a in func.args.args if a.arg in CONFIG_PARAMS or
             a.arg.endswith(("_cfg", "_config"))}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and "config" in ast.unparse(node.value):
            for target in node.targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def config_gets() -> list[str]:
    """'path:line function: code' of every `.get(` on a config in fdm/, minus EXCEPTIONS."""
    found = []
    for path in sorted((ROOT / "fdm").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if (rel, "*") in EXCEPTIONS:
            continue
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) or \
                    (rel, func.name) in EXCEPTIONS:
                continue
            names = _config_names(func)
            for node in ast.walk(func):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "get"
                        and _is_config_expr(node.func.value, names)):
                    found.append(f"{rel}:{node.lineno} {func.name}: {ast.unparse(node)}")
    return sorted(set(found))


def test_library_code_reads_config_keys_directly():
    assert config_gets() == []


def test_the_check_finds_a_config_get():
    tree = ast.parse("def f(config):\n    m = config.model\n    return m.get('x', 1)\n")
    func = tree.body[0]
    assert _config_names(func) == {"config", "m"}
    call = func.body[1].value
    assert _is_config_expr(call.func.value, _config_names(func))


# ------------------------------------------------------ rules on every config


@pytest.mark.parametrize("name,variant", all_configs())
def test_every_config_satisfies_its_rules_and_declares_its_defaults(name, variant):
    c = load(name, variant)
    check_config(c)
    rules = family_class(c.model.family).config_rules
    missing = [k for k in rules if config_rules.lookup(c, k) is None]
    assert not missing, missing     # every key a rule names is declared


# Keys that fdm/run.py and fdm/train/trainer.py read from every family's config.
RUNNER_KEYS = ("eval.at_end", "train.seed", "train.num_steps", "train.batch_size",
               "train.log_every", "train.checkpoint_every", "train.image_every",
               "train.ema_decay")


@pytest.mark.parametrize("name,variant", all_configs())
def test_every_config_declares_the_keys_the_shared_runner_reads(name, variant):
    c = load(name, variant)
    assert [k for k in RUNNER_KEYS if config_rules.lookup(c, k) is None] == []


@pytest.mark.parametrize("name,variant", all_configs())
def test_a_bad_value_of_any_key_is_a_one_line_error_naming_it(name, variant):
    rules = family_class(load(name, variant).model.family).config_rules
    for key, rule in rules.items():
        c = load(name, variant)
        for other, value in {**rule.bad_with, key: rule.bad}.items():
            section, leaf = other.rsplit(".", 1)
            config_rules.lookup(c, section)[leaf] = value
        with pytest.raises(UserError) as info:
            check_config(c)
        message = str(info.value)
        assert len(message.splitlines()) == 1 and message.startswith(f"{key}="), message
        assert rule.allowed in message


def test_rule_messages_name_the_allowed_values():
    with pytest.raises(UserError, match=r"model.num_masks=0 is invalid; use an integer >= 1"):
        c = load("shapes", "")
        c.model.num_masks = 0
        check_config(c)
    with pytest.raises(UserError, match=r"eval.segment_t=1000 .*num_timesteps\)"):
        c = load("shapes", "")
        c.eval.segment_t = 1000
        check_config(c)


# ------------------------------------------------------ old workdirs


def test_a_saved_config_missing_a_key_gets_its_declared_default(tmp_path):
    c = load("shapes", "")
    del c.model["mask_skip_max_res"]
    del c.train["mask_z_loss"]
    del c.eval["segmenter_workdir"]
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
    loaded = api.load_config(str(tmp_path))
    assert loaded.model.mask_skip_max_res == 0 and loaded.train.mask_z_loss == 0.0
    assert loaded.eval.segmenter_workdir == ""
    assert loaded.train.mask_prior_steps == c.train.mask_prior_steps    # kept as saved


def test_filling_a_scene_folder_config_adds_no_procedural_scene_keys(tmp_path):
    """The lifting defaults carry no dataset's own keys: an old Lego workdir gets the
    lifting keys it predates, not the toy scene's data.num_train / data.num_val."""
    c = load("lego", "")
    assert "num_train" not in c.data and "num_val" not in c.data
    del c.eval["landscape_size"]
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
    loaded = api.load_config(str(tmp_path))
    assert loaded.eval.landscape_size == 32 and loaded.data.dataset == "nerf_synthetic"
    assert "num_train" not in loaded.data and "num_val" not in loaded.data
    assert load("toy_scene", "tiny").data.num_train == 8
