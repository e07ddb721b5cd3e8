"""Model families and the registry that maps `config.model.family` to one."""
import importlib

from fdm.errors import UserError
from fdm.models.base import LossOutput, ModelFamily

_FAMILIES = {
    "ddpm": "fdm.models.ddpm:DDPMFamily",
    "fdm": "fdm.models.fdm:FDMFamily",
    "fdm_given_masks": "fdm.models.mask_probe:GivenMaskFDMFamily",
    "nerf_lifting": "fdm.models.lifting:LiftingFamily",
}


def register_family(name: str, target: str) -> None:
    """Registers "module.path:ClassName" under `name`."""
    _FAMILIES[name] = target


def get_family(config) -> ModelFamily:
    """Builds the ModelFamily named by `config.model.family`."""
    name = config.model.family
    if name not in _FAMILIES:
        raise UserError(f"unknown model.family {name!r}; use one of {sorted(_FAMILIES)}")
    module_name, class_name = _FAMILIES[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(config)


__all__ = ["LossOutput", "ModelFamily", "get_family", "register_family"]
