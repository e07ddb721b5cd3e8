"""DDPM on the Weizmann horse photos at 32x32: the U-Net whose decoder features the
DatasetDDPM-unsup k-means baseline clusters (seed 000 Tables 2.3/2.4).

  python -m experiments.main --config=configs/ddpm_horse.py --workdir=DIR
  python -m experiments.baselines --baseline=kmeans --config=configs/weizmann_horse.py \
      --ddpm_workdir=DIR --workdir=DIR_KMEANS

Same data and U-Net size as configs/weizmann_horse.py (the FDM it is compared with);
`data.data_dir` defaults to ../shared/data/weizmann_horse (278 images).
"""
from configs import ddpm_tiny


def get_config():
    c = ddpm_tiny.get_config()
    c.name = "ddpm_horse"
    c.data.dataset = "folder"
    c.data.data_dir = "../shared/data/weizmann_horse"
    c.data.random_flip = True
    for key in ("num_regions", "num_train", "num_eval"):   # procedural-data keys only
        del c.data[key]
    c.model.dropout = 0.1
    c.train.num_steps = 6000
    c.train.learning_rate = 5e-4
    c.train.ema_decay = 0.995
    c.train.checkpoint_every = 500
    c.eval.num_examples = 32
    c.eval.num_fid_samples = 278    # FID/KID vs all 278 photos when eval.metric_weights is set
    return c
