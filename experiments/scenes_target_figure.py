"""The scene samples at their target view, beside the pixel classes and the known answer.

  python -m experiments.scenes_target_figure --workdir=WORKDIR [--num=4] [--out=PATH]

Reads a forward_scenes run: WORKDIR's config, the newest EMA params and the
posterior_samples.npz its evaluation wrote, with the eval tuples they were drawn for;
writes PATH (default WORKDIR/samples/target_grid.png), a row per context (the first
--num): the context, the true target, its pixel classes (green seen by the context,
grey unseen, magenta hidden sides), the samples rendered at the target camera, their
per-pixel std and, with data.hidden_sides, the known answer's
(`fdm.forward.scenes.target_figure_tiles`).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import fdm
from fdm import viz
from fdm.data import load_split_arrays
from fdm.errors import UserError
from fdm.forward import ObservationTuple, take_rows
from fdm.forward import scenes
from fdm.models.dfm import POSTERIOR_SAMPLES_FILE, saved_posterior_samples

UPSCALE = 4


def target_figure(workdir: str, num: int) -> np.ndarray:
    """The uint8 grid (module doc) of the first `num` contexts of the run in `workdir`."""
    model = fdm.load(workdir)
    config = model.family.config
    if config.model.forward != "scenes":
        raise UserError(f"{workdir} is a model.forward={config.model.forward!r} run; this "
                        "figure is for forward_scenes runs")
    e = config.eval
    if not 1 <= num <= int(e.num_contexts):
        raise UserError(f"--num={num}; use 1 .. eval.num_contexts={e.num_contexts}")
    if not os.path.exists(os.path.join(workdir, POSTERIOR_SAMPLES_FILE)):
        raise UserError(f"{workdir} has no {POSTERIOR_SAMPLES_FILE}; evaluate the run first "
                        f"(python -m experiments.main --mode=evaluate --workdir={workdir} ...)")
    arrays = load_split_arrays(config, "eval")
    views = take_rows(ObservationTuple.from_batch(arrays), slice(0, int(e.num_contexts)))
    signals = saved_posterior_samples(workdir, views, int(e.samples_per_context))
    operator = model.family.problem.bound(model.params).operator
    rows = slice(0, num)
    tiles = scenes.target_figure_tiles(operator, signals[rows], take_rows(views, rows),
                                       np.asarray(arrays["signal"][rows]))
    images = viz.to_uint8(np.clip(tiles.reshape((-1,) + tiles.shape[2:]), -1.0, 1.0))
    return viz.make_grid(viz.upscale_nearest(images, UPSCALE), ncol=tiles.shape[1],
                         pad_value=255)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num", type=int, default=4)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.workdir, "samples", "target_grid.png")
    try:
        grid = target_figure(args.workdir, args.num)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    viz.save_png(out, grid)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
