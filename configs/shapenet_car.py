"""Pose-free NeRF lifting on a ShapeNet car (seed 000 sec. 3.4): 8 candidates over 8 octants.

  python -m experiments.main --config=configs/shapenet_car.py --workdir=/tmp/car \
      --config.data.data_dir=/path/to/car_scene

The paper renders 5 ShapeNet cars from views all around the object (both
hemispheres), so the camera distribution is 8 candidates, one per octant of the
sphere of radius 4 (Alg. 4, Code 3.3); otherwise the Lego configuration. The
scene is read as a nerf_synthetic-style folder (`transforms_{train,val}.json`
+ RGBA PNGs, white background, object centred at the origin, cameras at about
radius 4); no copy is shared here, so data.data_dir must be given.
"""
from configs import lego


def get_config():
    c = lego.get_config()
    c.name = "shapenet_car"
    c.data.data_dir = ""
    c.model.num_candidates = 8
    c.model.candidate_layout = "octant"
    return c
