"""Pose-free NeRF lifting on Blender Drums: the Lego configuration on another scene.

  python -m experiments.main --config=configs/drums.py --workdir=/tmp/drums \
      --config.data.data_dir=/path/to/nerf_synthetic/drums

Same settings as configs/lego.py (128x128, 12 candidates over the 4 quadrants of
the upper hemisphere, lambda = 0.1, 200K steps); the shared development data has
no Drums scene, so data.data_dir must point at a download of nerf_synthetic.
"""
from configs import lego


def get_config():
    c = lego.get_config()
    c.name = "drums"
    c.data.data_dir = "../shared/data/nerf_synthetic/drums"
    return c
