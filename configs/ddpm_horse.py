"""DDPM on the Weizmann horse photos at 32x32: the U-Net whose decoder features the
DatasetDDPM-unsup k-means baseline clusters (seed 000 Tables 2.3/2.4).

  python -m experiments.main --config=configs/ddpm_horse.py --workdir=DIR
  python -m experiments.baselines --baseline=kmeans --config=configs/weizmann_horse.py \
      --ddpm_workdir=DIR --workdir=DIR_KMEANS

The data section is configs/weizmann_horse.py's (the FDM it is compared with), and so
is the U-Net's size; `data.data_dir` defaults to ../shared/data/weizmann_horse (278 images).
"""
from configs import weizmann_horse
from configs.fdm_common import ddpm_config


def get_config():
    fdm = weizmann_horse.get_config()
    m = fdm.model
    c = ddpm_config("ddpm_horse", dataset=fdm.data.dataset, data_dir=fdm.data.data_dir,
                    image_size=fdm.data.image_size, ch=m.ch, ch_mult=m.ch_mult,
                    num_res_blocks=m.num_res_blocks, attn_resolutions=m.attn_resolutions,
                    dropout=m.dropout, num_steps=6000, batch_size=fdm.train.batch_size)
    c.data = fdm.data
    c.model.num_groups = m.num_groups
    c.train.learning_rate = 5e-4
    c.train.ema_decay = 0.995
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 50, 500, 1000
    c.eval.num_examples = 32
    c.eval.sampler, c.eval.sample_steps = "ddim", 50
    c.eval.num_fid_samples = 278    # FID/KID vs all 278 photos when eval.metric_weights is set
    return c
