"""Model families and the registry that maps `config.model.family` to one.

Each family class names where its keys are declared with their defaults
(`ModelFamily.config_defaults`, a config builder in configs/) and their valid values
(`ModelFamily.config_rules`); `get_family` checks those rules before it builds
anything (`check_config`), `fill_defaults` completes a config saved before a key existed.
"""
import importlib

from fdm import config_rules
from fdm.errors import UserError
from fdm.models.base import LossOutput, ModelFamily

_FAMILIES = {
    "ddpm": "fdm.models.ddpm:DDPMFamily",
    "fdm": "fdm.models.fdm:FDMFamily",
    "fdm_given_masks": "fdm.models.mask_probe:GivenMaskFDMFamily",
    "nerf_lifting": "fdm.models.lifting:LiftingFamily",
    "segmenter": "fdm.models.segmenter:SegmenterFamily",
    "lmconv": "fdm.models.lmconv:LMConvFamily",
    "dfm": "fdm.models.dfm:DFMFamily",
    "pdae": "fdm.models.pdae:PDAEFamily",
}


def register_family(name: str, target: str) -> None:
    """Registers "module.path:ClassName" under `name`."""
    _FAMILIES[name] = target


def get_family(config, workdir: str | None = None) -> ModelFamily:
    """Builds the ModelFamily named by `config.model.family`, with what its constructor
    takes beside the config (`ModelFamily.inputs`: read from a trained `workdir`, else
    from the data)."""
    check_config(config)
    cls = family_class(config.model.family)
    return cls(config, **cls.inputs(config, workdir))


def family_class(name: str) -> type[ModelFamily]:
    """The ModelFamily subclass registered under `name` (UserError when none is)."""
    if name not in _FAMILIES:
        raise UserError(f"unknown model.family {name!r}; use one of {sorted(_FAMILIES)}")
    module_name, class_name = _FAMILIES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def check_config(config) -> None:
    """UserError naming the first key whose value breaks its family's `config_rules`
    (one line with the allowed values; before anything is built or written)."""
    config_rules.check(config, family_class(config.model.family).config_rules)


def fill_defaults(config) -> list[str]:
    """Adds to `config` (in place) the keys it lacks, e.g. a config.json saved before
    they existed, at their defaults in the family's `config_defaults` builder; returns
    the dotted keys added."""
    target = family_class(config.model.family).config_defaults
    if not target:
        return []
    module_name, function_name = target.split(":")
    defaults = getattr(importlib.import_module(module_name), function_name)()
    return config_rules.fill_defaults(config, defaults)


__all__ = ["LossOutput", "ModelFamily", "check_config", "family_class", "fill_defaults",
           "get_family", "register_family"]
