"""FDM on Oxford Flowers-102 128x128 (seed 000 §2.4): K=3, C=128, channels [1, 1, 2, 3, 4], 2 blocks.

  python -m experiments.main --config=configs/flowers128.py --workdir=DIR \
      --config.data.data_dir=PATH

Data layout until the dataset loaders land: PATH/images/*.jpg|png (+ PATH/masks/ with
the same stems for evaluation only). A missing PATH stops `train` with a one-line
message naming it.
"""
from configs.fdm_common import fdm_config


def get_config():
    return fdm_config(
        "flowers128", dataset="folder", data_dir="data/flowers", image_size=128,
        ch_mult=(1, 1, 2, 3, 4), num_res_blocks=2, num_steps=50_000, batch_size=128,
        dropout=0.1)
