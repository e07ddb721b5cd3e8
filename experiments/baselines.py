"""Command line for the segmentation baselines (`fdm.baselines`):

  python -m experiments.baselines --baseline=kmeans|supervised|grabcut \
      --config=configs/weizmann_horse.py --workdir=DIR [--ddpm_workdir=DDPM_DIR] \
      [--config.baselines.key=value ...]

Writes DIR/results.json (keys of `--mode=evaluate`: seg_acc, seg_iou, seg_dice on
the test split, all_seg_* on the whole eval split; see fdm/baselines/common.py).
`--baseline=kmeans` (DatasetDDPM-unsup) clusters the decoder features of a DDPM
trained first with `python -m experiments.main --config=configs/ddpm_horse.py
--workdir=DDPM_DIR` (any model.family="ddpm" run at the same data.image_size).
Thin: flags and one-line errors are those of experiments/main.py (its --mode,
--input and distributed flags are not used here).
"""
from absl import app, flags

from experiments import main as cli
from fdm.baselines import BASELINES, run_baseline
from fdm.errors import UserError

_BASELINE = flags.DEFINE_enum("baseline", None, BASELINES, "Which baseline to run.")
_DDPM_WORKDIR = flags.DEFINE_string(
    "ddpm_workdir", None, "Workdir of a trained DDPM (model.family='ddpm'); kmeans only.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli._fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    try:
        if not _BASELINE.value:
            raise UserError(f"missing --baseline; pass one of {', '.join(BASELINES)}")
        if not cli._WORKDIR.value:
            raise UserError("missing --workdir; pass --workdir=DIR (created if needed)")
        results = run_baseline(_BASELINE.value, cli._load_config(), cli._WORKDIR.value,
                               _DDPM_WORKDIR.value)
    except UserError as e:
        cli._fail(str(e), 2)
    print({k: v for k, v in results.items() if k.startswith(("seg_", "all_seg_", "wall"))})


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
