"""FDM on ImageNet 64x64, class-conditional (seed 000 §2.4): K=3, C=128, channels [1, 2, 3, 4], 3 blocks.

  python -m experiments.main --config=configs/imagenet64.py --workdir=DIR \
      --config.data.data_dir=PATH

Data layout until the dataset loaders land: PATH/images/*.jpg|png (+ PATH/masks/ with
the same stems for evaluation only). A missing PATH stops `train` with a one-line
message naming it.
"""
from configs.fdm_common import fdm_config


def get_config():
    return fdm_config(
        "imagenet64", dataset="folder", data_dir="data/imagenet64", image_size=64,
        ch_mult=(1, 2, 3, 4), num_res_blocks=3, num_steps=500_000, batch_size=512,
        num_classes=1000,
        dropout=0.0)
