"""FDM on FFHQ (seed 000 §2.4): K=3, C=128; 64x64 (channels [1, 2, 3, 4], 3 blocks)
or, variant 128, 128x128 (channels [1, 1, 2, 3, 4], 2 blocks).

  python -m experiments.main --config=configs/ffhq.py --workdir=DIR \
      --config.data.data_dir=PATH
  python -m experiments.main --config=configs/ffhq.py:128 ...   # 128x128

Data: FFHQ (images1024x1024/ or thumbnails128x128/ under PATH, `fdm.data.ffhq`) for
training; evaluation on the CelebAMask-HQ test set with skin/hair/background masks
(data.eval_dataset="celebamask_hq", data.eval_data_dir=CELEBA, `fdm.data.celebamask`).
A missing file stops with a one-line message naming it.
"""
from configs import variants
from configs.fdm_common import fdm_config, size_128


def get_config(variant: str = ""):
    """64x64; variant '128' (`--config=configs/ffhq.py:128`) the 128x128 model."""
    return variants.apply(_config_64(), variant, {"128": size_128})


def _config_64():
    c = fdm_config(
        "ffhq", dataset="ffhq", data_dir="data/ffhq", image_size=64,
        ch_mult=(1, 2, 3, 4), num_res_blocks=3, num_steps=500_000, batch_size=128,
        dropout=0.0, eval_dataset="celebamask_hq", eval_data_dir="data/CelebAMask-HQ")
    c.data.eval_split = "test"         # CelebAMask-HQ test set (CelebA partition)
    return c
