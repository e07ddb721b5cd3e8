"""FDM on Oxford Flowers-102 128x128 (seed 000 §2.4): K=3, C=128, channels [1, 1, 2, 3, 4], 2 blocks.

  python -m experiments.main --config=configs/flowers128.py --workdir=DIR \
      --config.data.data_dir=PATH

Data: Oxford Flowers-102 with the official masks in the IEM train/test splits; PATH
holds jpg/, segmim/ and setid.mat (layout and download: `fdm.data.flowers`).
data.eval_split = "test" | "val". A missing file stops with a one-line message naming it.
"""
from configs.fdm_common import fdm_config


def get_config():
    c = fdm_config(
        "flowers128", dataset="flowers102", data_dir="data/flowers102", image_size=128,
        ch_mult=(1, 1, 2, 3, 4), num_res_blocks=2, num_steps=50_000, batch_size=128,
        dropout=0.1)
    c.data.eval_split = "test"         # IEM test split; "val" for tuning
    return c
