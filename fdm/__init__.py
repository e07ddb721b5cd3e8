"""fdm: diffusion models whose architecture makes interpretable structure appear.

Factorized Diffusion Models (unsupervised segmentation + image/mask generation)
and NeRF inside diffusion (pose-free 3D reconstruction), on a shared DDPM core.
"""
__version__ = "0.1.0"

from fdm.api import TrainedModel, load, load_config, segment

__all__ = ["TrainedModel", "load", "load_config", "segment"]
