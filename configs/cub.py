"""FDM on CUB-200-2011 (seed 000 §2.4): K=3, C=128; 64x64 (channels [1, 2, 3, 4], 3 blocks)
or, variant 128, 128x128 (channels [1, 1, 2, 3, 4], 2 blocks).

  python -m experiments.main --config=configs/cub.py --workdir=DIR \
      --config.data.data_dir=PATH
  python -m experiments.main --config=configs/cub.py:128 ...   # 128x128

Data: CUB-200-2011 with its masks in the IEM (ReDO) splits; PATH is CUB_200_2011/ with
images/, images.txt, segmentations/ and train_val_test_split.txt (layout and
downloads: `fdm.data.cub`). data.eval_split = "test" | "val". A missing file stops
with a one-line message naming it.
"""
from configs import variants
from configs.fdm_common import fdm_config, size_128


def get_config(variant: str = ""):
    """64x64; variant '128' (`--config=configs/cub.py:128`) the 128x128 model."""
    return variants.apply(_config_64(), variant, {"128": size_128})


def _config_64():
    c = fdm_config(
        "cub", dataset="cub", data_dir="data/CUB_200_2011", image_size=64,
        ch_mult=(1, 2, 3, 4), num_res_blocks=3, num_steps=50_000, batch_size=128,
        dropout=0.1)
    c.data.eval_split = "test"         # IEM test split; "val" for tuning
    return c
