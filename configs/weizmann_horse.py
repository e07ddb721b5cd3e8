"""FDM on the Weizmann horse photos: train on images/ only, evaluate against masks/.

  python -m experiments.main --config=configs/weizmann_horse.py --workdir=DIR
  python -m experiments.main --config=configs/weizmann_horse.py --workdir=DIR --mode=evaluate

`data.data_dir` defaults to ../shared/data/weizmann_horse (278 images, masks with
255 = horse); `evaluate` scores every image found there. 32x32 fits a CPU; set
--config.data.image_size=64 with a paper-sized model on a GPU.
"""
from configs.fdm_common import fdm_config


def get_config():
    c = fdm_config("weizmann_horse", dataset="folder", data_dir="../shared/data/weizmann_horse",
                   image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                   attn_resolutions=(8,), num_steps=6000, batch_size=32)
    c.model.num_groups = 8
    c.model.dropout = 0.1
    c.train.learning_rate = 5e-4
    c.train.ema_decay = 0.995
    c.train.frozen_steps.mask_generator = 400   # as configs/shapes.py: decoder first
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.eval.num_examples = 32
    c.eval.sampler = "ddim"
    c.eval.sample_steps = 50
    c.eval.record_every = 5
    c.eval.at_end = True
    c.eval.num_fid_samples = 278          # as many samples as photos (with eval.metric_weights)
    c.baselines.num_train_images = 200    # baselines: horse001-200 train, horse201-278 test
    return c
