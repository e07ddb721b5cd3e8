"""Command line for the segmentation baselines (`fdm.baselines`):

  python -m experiments.baselines --baseline=kmeans|supervised|grabcut|histogram \
      --config=configs/weizmann_horse.py --workdir=DIR [--ddpm_workdir=DDPM_DIR] \
      [--config.baselines.key=value ...]

Writes DIR/results.json (keys of `--mode=evaluate`: seg_acc, seg_iou, seg_dice on
the test split, all_seg_* on the whole eval split; see fdm/baselines/common.py);
`--baseline=supervised` first trains the U-Net segmenter (model.family="segmenter")
with the generic trainer into DIR (config.json, checkpoints/; `fdm.load(DIR)`), which
an FDM's `--mode=evaluate --config.eval.segmenter_workdir=DIR` uses to score the
masks of generated images (gen_seg_*, Table 2.5 bottom); a rerun resumes or reuses it.
`--baseline=histogram` fits a colour-histogram pixel classifier with the labels of
the train images: how far colour alone segments the data (fdm/baselines/histogram.py).
`--baseline=kmeans` (DatasetDDPM-unsup) clusters the decoder features of a DDPM
trained first with `python -m experiments.main --config=configs/ddpm_horse.py
--workdir=DDPM_DIR` (any model.family="ddpm" run at the same data.image_size).
Thin: one-line errors (exit code 2) as experiments/main.py, via experiments/cli.py.
"""
from absl import app, flags, logging

from experiments import cli  # first: defines --config/--workdir, quiets TF's banner
from fdm.baselines import BASELINES, run_baseline
from fdm.errors import TrainingStopped, UserError

_BASELINE = flags.DEFINE_enum("baseline", None, BASELINES, "Which baseline to run.")
_DDPM_WORKDIR = flags.DEFINE_string(
    "ddpm_workdir", None, "Workdir of a trained DDPM (model.family='ddpm'); kmeans only.")


def main(argv: list[str]) -> None:
    cli.reject_positional(argv)
    try:
        if not _BASELINE.value:
            raise UserError(f"missing --baseline; pass one of {', '.join(BASELINES)}")
        workdir = cli.workdir()
        results = run_baseline(_BASELINE.value, cli.load_config(), workdir, _DDPM_WORKDIR.value)
    except UserError as e:
        cli.fail(str(e), 2)
    except TrainingStopped as e:
        logging.warning("%s", e)
        return
    print({k: v for k, v in results.items() if k.startswith(("seg_", "all_seg_", "wall"))})


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
