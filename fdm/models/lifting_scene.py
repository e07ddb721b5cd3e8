"""What a NeRF lifting run keeps of its training scene: `SceneMeta`, saved as DIR/scene.npz.

`LiftingFamily` is built from a `SceneMeta` handed in (`LiftingFamily.inputs`), never
from the scene files: the geometry of the views (`fdm.nerf.views.ViewGeometry`), the
true cameras of the training views (the render paths of the supervised baseline) and,
for a pose-free forward-facing scene only, the training views themselves (its render
spiral follows their predicted cameras). The trainer writes the file at the start of
training (`LiftingFamily.save_inputs`); evaluate / render / sample / `fdm.load` read it,
so render and sample work with the scene folder moved away. A workdir trained before
the file existed gets it written from the scene (data.data_dir) on first use.
"""
from __future__ import annotations

import dataclasses
import os

import flax
import numpy as np

from fdm.data import load_scene
from fdm.data.nerf import SceneData
from fdm.data.scenes import to_arrays
from fdm.errors import UserError
from fdm.host import write_npz_atomic
from fdm.nerf.views import ViewGeometry

SCENE_FILE = "scene.npz"


@flax.struct.dataclass
class SceneMeta:
    """What lifting needs of its training scene (see the module docstring)."""
    geometry: ViewGeometry = flax.struct.field(pytree_node=False)
    train_c2w: np.ndarray     # [N, 4, 4] float32 true cameras of the training views
    train_images: np.ndarray  # [N, H, W, 3] uint8 training views, or [0, H, W, 3]: not kept


def from_scene(scene: SceneData, pose_free: bool) -> SceneMeta:
    """The SceneMeta of a training split; its images are kept only when pose_free and
    the scene is forward-facing."""
    arrays = to_arrays(scene)
    keep = len(arrays["image"]) if pose_free and scene.geometry.forward_facing else 0
    return SceneMeta(scene.geometry, arrays["c2w"], arrays["image"][:keep])


def save(meta: SceneMeta, path: str) -> None:
    """Writes meta to path (.npz: one 0-d array per geometry field, train_c2w, train_images)."""
    fields = {f.name: np.asarray(getattr(meta.geometry, f.name))
              for f in dataclasses.fields(ViewGeometry)}
    write_npz_atomic(path, train_c2w=meta.train_c2w, train_images=meta.train_images, **fields)


def read(path: str) -> SceneMeta:
    """The SceneMeta that `save` wrote to path."""
    with np.load(path) as z:
        geometry = ViewGeometry(**{f.name: z[f.name].item()
                                   for f in dataclasses.fields(ViewGeometry)})
        return SceneMeta(geometry, z["train_c2w"], z["train_images"])


def scene_meta(config, workdir: str | None, pose_free: bool) -> SceneMeta:
    """The run's SceneMeta: DIR/scene.npz when workdir has one, else from the training
    scene (`fdm.data.load_scene`), then written to DIR/scene.npz when workdir is given
    (a run trained before the file existed); a one-line UserError when neither exists."""
    path = os.path.join(workdir, SCENE_FILE) if workdir else ""
    if path and os.path.exists(path):
        return read(path)
    try:
        meta = from_scene(load_scene(config, "train"), pose_free)
    except UserError as e:
        if not path:
            raise
        raise UserError(f"{path} is missing (the run predates it) and the training scene "
                        f"cannot be read to write it: {e}") from e
    if path:
        save(meta, path)
    return meta
