"""PDAE / DiffSiam (seed 002, `fdm.models.pdae`): an encoder trained on a frozen DDPM.

The CPU experiment of the brief (shared/design/seed002.md sec. 4) on the procedural
factors data (16x16, five labelled factors, `fdm.data.factors`), first the frozen DM,
then the encoders at the same budget (2000 steps, batch 64):

  python -m experiments.main --config=configs/ddpm.py:factors --workdir=workdirs/factors_dm
  python -m experiments.main --config=configs/pdae.py --workdir=workdirs/factors_diffsiam
  python -m experiments.main --config=configs/pdae.py:simsiam_only \
      --workdir=workdirs/factors_simsiam
  python -m experiments.main --config=configs/pdae.py:pdae --workdir=workdirs/factors_pdae
  python -m experiments.main --config=configs/pdae.py:random_encoder \
      --workdir=workdirs/factors_random

(each reads the DM from model.frozen_dm_workdir = workdirs/factors_dm; evaluation at the
end writes results.json with the z / z = 0 losses per quarter of t, a linear probe and
the few-shot episodes per factor, DIR/z.npz with the features and labels, and
DIR/samples/: recon.png, counterfactual.png (Alg. 2), manipulation.png (Alg. 3)).

Variants:
  ''              DiffSiam, hierarchical (Hier.), the bins stage map (brief D1): ResNet-10-lite
                  encoder (widths 16/32/64/64, GroupNorm 8), d = 64, n = 8 segments, heads
                  64 -> 64 (predictor bottleneck 16), L = L_diffusion + L_SimSiam.
  'sequential'    DiffSiam Seq. (g sees only z_k).
  'pdae'          PDAE: n = 1, no SimSiam (train.ssl_weight = 0).
  'simsiam_only'  SimSiam alone (train.diffusion_weight = 0).
  'random_encoder' the trivial baselines: the random-init encoder (one step, EMA decay 1:
                  the evaluated EMA params are the initial ones) and the raw-pixel probes
                  (eval.pixel_probes).
  'smoke'         a seconds-long run for tests (8x8 factors, tiny networks, T = 10).
  'transfer_NAME' linear-probe transfer (Table 4.1's suite, `fdm.data.transfer`) of an encoder
                  trained with 'cifar10': run --mode=evaluate on its workdir with
                  --config.data.data_dir=<the dataset's folder>; the probe is fitted on
                  the suite's train split, its l2 strength chosen on the suite's val split
                  (the last eval.probe_val_examples of data.train_split = "trainval") and
                  refitted on both, scored on test with the suite's metric. NAME in
                  TRANSFER_PROBES; images at the frozen DM's 32x32.
  'cifar10'       the thesis's setting: CIFAR-10 (TFDS under data.data_dir), the DDPM
                  CIFAR-10 U-Net (google/ddpm-cifar10-32 as a local diffusers directory,
                  model.frozen_dm_diffusers) as the frozen DM, ResNet-10 (d = 512), n = 64,
                  SimSiam heads 2048 / 512, 400K iterations at batch 128, SGD 0.05 cosine
                  with weight decay 5e-4 for the encoder and heads, Adam 1e-4 for g (D7).

`pdae_config(name, data)` declares every key of the family with its default.
"""
import ml_collections

from configs import variants
from configs.fdm_common import data_config, loop_keys


def get_config(variant: str = ""):
    """The CPU DiffSiam run; variants in the module docstring."""
    return variants.apply(_factors(), variant, {
        "sequential": _sequential, "pdae": _pdae, "simsiam_only": _simsiam_only,
        "random_encoder": _random_encoder, "smoke": _smoke, "cifar10": _cifar10,
        **{f"transfer_{name}": _transfer(name) for name in TRANSFER_PROBES}})


# The transfer suite (`fdm.data.transfer.TRANSFER`): name -> (size of its val split at
# data.split_seed = 0 on the full published data, `transfer.split_sizes`; the suite's metric).
TRANSFER_PROBES = {
    "aircraft": (3333, "mean_per_class"), "caltech101": (483, "mean_per_class"),
    "cars": (1628, "accuracy"), "cifar10": (10_000, "accuracy"),
    "cifar100": (10_000, "accuracy"), "dtd": (1880, "accuracy"),
    "flowers102": (1020, "mean_per_class"), "food101": (15_150, "accuracy"),
    "pets": (736, "mean_per_class"), "sun397": (3970, "accuracy")}


def pdae_config(name: str, data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Every key of a PDAE / DiffSiam experiment (`fdm.models.pdae`) with its default, on
    the data section `data`. Defaults: the thesis's CIFAR-10 networks and losses."""
    c = ml_collections.ConfigDict()
    c.name = name
    c.data = data

    c.model = ml_collections.ConfigDict()
    c.model.family = "pdae"
    # The frozen DM, exactly one of: a DDPM workdir (EMA params of its newest checkpoint)
    # or a local diffusers UNet2DModel directory.
    c.model.frozen_dm_workdir = ""
    c.model.frozen_dm_diffusers = ""
    c.model.encoder_widths = (64, 128, 256, 512)    # ResNet-10 (CIFAR stem), one per stage
    c.model.encoder_blocks = (1, 1, 1, 1)
    c.model.encoder_groups = 32        # GroupNorm groups (brief D5: no BatchNorm state)
    c.model.z_dim = 0                  # 0: z is the pooled features (widths[-1] dims)
    c.model.num_segments = 64          # n; 1 = PDAE
    c.model.segment_mode = "hierarchical"   # hierarchical | sequential
    c.model.stage_map = "bins"         # bins (the authors' code) | alg1_literal (brief D1)
    c.model.detach_prev = False        # stop-gradient on z_1..z_{k-1} (brief D2)
    c.model.loss_gamma = 0.1           # lambda_t = snr^gamma / (1 + snr) (PDAE)
    c.model.g_init = "random"          # random (PDAE) | copy_dm (brief D9)
    c.model.proj_dim = 2048            # SimSiam projector width
    c.model.pred_hidden = 512          # SimSiam predictor bottleneck
    c.model.head_norm = "batch"        # batch (batch statistics only) | group
    c.model.head_groups = 32           # groups of head_norm = "group"
    c.model.aug_crop_scale = (0.2, 1.0)            # SimSiam's views (brief D8)
    c.model.aug_jitter = (0.4, 0.4, 0.4, 0.1)      # brightness, contrast, saturation, hue
    c.model.aug_jitter_prob = 0.8
    c.model.aug_gray_prob = 0.2

    c.diffusion = ml_collections.ConfigDict()      # must be the frozen DM's schedule
    c.diffusion.num_timesteps = 1000
    c.diffusion.beta_schedule = "linear"
    c.diffusion.beta_start = 1e-4
    c.diffusion.beta_end = 0.02

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 400_000
    c.train.batch_size = 128
    c.train.learning_rate = 1e-4               # g (Adam)
    c.train.encoder_optimizer = "sgd"          # sgd (SimSiam's, cosine) | adam (AdamW)
    c.train.encoder_learning_rate = 0.05       # f and the heads
    c.train.encoder_weight_decay = 5e-4
    c.train.grad_clip = 0.0
    c.train.diffusion_weight = 1.0             # Eq. 3.12 (brief D6)
    c.train.ssl_weight = 1.0
    loop_keys(c.train, ema_decay=0.9999, log_every=100, checkpoint_every=10_000,
              keep_checkpoints=2, image_every=10_000)

    c.eval = ml_collections.ConfigDict()
    c.eval.at_end = True               # after training: evaluate and sample (fdm.run)
    c.eval.num_examples = 10_000       # eval images of the z / z = 0 loss comparison
    c.eval.batch_size = 250
    c.eval.feature_examples = 0        # train images whose z is written and probed (0: all)
    c.eval.probe_val_examples = 10_000  # the last ones: the probes' validation split
    c.eval.probe_refit = False         # True: the chosen l2 strength refitted on train + val
    c.eval.probe_metric = "accuracy"   # or "mean_per_class" (fdm.metrics.probes.score)
    c.eval.probe_segments = 0          # > 0: also probe groups of this many parts of z
    c.eval.probe_segment_groups = ((0,),)
    c.eval.pixel_probes = False        # True: also the raw-pixel baseline, probe_pixels_<name>
    c.eval.invariance_examples = 1000  # eval images whose z is compared with their views' z
    c.eval.num_samples = 64            # reconstructions (metrics and the recon figure)
    c.eval.sample_steps = 100          # DDIM steps (and inversion steps) of all guided sampling
    # Few-shot episodes (Table 4.2) on the eval z per label column: 5-way, or all the
    # classes with C + queries examples when fewer (the key says: fewshot_<name>_<W>way_<C>shot).
    c.eval.few_shot_shots = (1, 5, 10)       # the C of the C-shot episodes; () for none
    c.eval.few_shot_episodes = 2000          # episodes per label set and C (thesis: 2000)
    c.eval.few_shot_queries = 15             # query examples per class (thesis: 15)
    c.eval.few_shot_joint = ()               # label columns also combined into one class each
    c.eval.guidance_z = "masked"             # what g sees when sampling: masked z_bar_{k(t)}, as
                                             # in training (brief D10), or full z (Alg. 2/3)
    # Counterfactuals (Alg. 2), DIR/samples/counterfactual.png.
    c.eval.counterfactual_pairs = 4          # pairs (eval image i, eval image pairs + i); 0: none
    c.eval.counterfactual_scales = (0.25, 0.5, 0.75, 1.0)   # lambda (Fig. 4.1's four scales)
    c.eval.counterfactual_subset_fraction = 0.375  # f: S = fine / coarse are the first / last
                                                   # max(1, round(f n)) segments; S = all too
    # Attribute manipulation (Alg. 3), DIR/samples/manipulation.png.
    c.eval.manipulate_attributes = ()        # (label column, class) pairs, each one-vs-rest;
                                             # (): every label column with class 1
    c.eval.manipulate_nonzero = 16           # d': ProbMask's non-zero weights (thesis 16, 32,
                                             # 128 of 512); 0: the dense classifier
    c.eval.manipulate_scales = (-3.0, -1.5, 0.0, 1.5, 3.0)  # lambda: steps along the unit
                                             # normal in train-standardised z
    c.eval.manipulate_examples = 2           # eval images per attribute (not of its class)
    return c


def pdae_defaults() -> ml_collections.ConfigDict:
    """Every PDAE key at its default (`PDAEFamily.config_defaults`)."""
    return pdae_config("", data_config("", "", 0))


def _factors():
    """The CPU DiffSiam run on the factors data (module docstring)."""
    c = pdae_config("diffsiam_factors", data_config("factors", "", 16, random_flip=True))
    c.data.placement = "quadrant"   # the DM's (configs/ddpm.py:factors; fdm.data.factors)
    m = c.model
    m.frozen_dm_workdir = "workdirs/factors_dm"
    m.encoder_widths, m.encoder_groups = (16, 32, 64, 64), 8
    m.num_segments = 8
    m.proj_dim, m.pred_hidden, m.head_groups = 64, 16, 8
    t = c.train
    t.num_steps, t.batch_size = 2000, 64
    # L = L_diffusion + 0.01 L_SimSiam: at the thesis's weight 1 the SimSiam term (~ -0.8)
    # dwarfs this DM's weighted diffusion loss (~ 0.006) and z loses object hue (probe 63 %
    # against 96 % at 0.01 and 99.5 % for PDAE; README, session 15).
    t.ssl_weight = 0.01
    t.learning_rate = 2e-4
    t.encoder_optimizer, t.encoder_learning_rate, t.encoder_weight_decay = "adam", 1e-3, 0.0
    t.ema_decay, t.checkpoint_every, t.image_every = 0.995, 500, 2000
    e = c.eval
    e.num_examples, e.batch_size = 2000, 200
    e.probe_val_examples = 2000
    e.probe_segments, e.probe_segment_groups = 8, ((0, 1, 2), (3, 4), (5, 6, 7))
    e.num_samples, e.sample_steps = 16, 50
    e.few_shot_episodes, e.few_shot_joint = 500, ("shape", "obj_hue")   # brief sec. 4 D
    e.manipulate_attributes = (("obj_hue", 1), ("shape", 1))            # yellow, square
    e.manipulate_nonzero = 8           # d' = one segment's worth of the 64 dims
    return c


def _sequential(c) -> None:
    c.name = "diffsiam_seq_factors"
    c.model.segment_mode = "sequential"


def _pdae(c) -> None:
    c.name = "pdae_factors"
    c.model.num_segments = 1
    c.train.ssl_weight = 0.0


def _simsiam_only(c) -> None:
    c.name = "simsiam_factors"
    c.train.diffusion_weight = 0.0


def _random_encoder(c) -> None:
    c.name = "random_encoder_factors"
    c.train.num_steps, c.train.ema_decay = 1, 1.0
    c.eval.pixel_probes = True         # both trivial baselines in one run


def _smoke(c) -> None:
    c.name = "pdae_smoke"
    c.data.image_size, c.data.num_train, c.data.num_val, c.data.num_test = 8, 32, 8, 16
    c.model.encoder_widths, c.model.encoder_blocks, c.model.encoder_groups = (8, 8), (1, 1), 4
    c.model.num_segments, c.model.proj_dim, c.model.pred_hidden = 4, 8, 4
    c.model.head_groups = 2
    c.diffusion.num_timesteps = 10
    c.train.num_steps, c.train.batch_size = 2, 8
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 1, 2, 2
    c.eval.num_examples, c.eval.batch_size = 16, 8
    c.eval.probe_val_examples, c.eval.probe_segments = 8, 2
    c.eval.probe_segment_groups = ((0,), (1,))
    c.eval.num_samples, c.eval.sample_steps, c.eval.invariance_examples = 4, 2, 8
    c.eval.few_shot_shots, c.eval.few_shot_episodes, c.eval.few_shot_queries = (1,), 4, 1
    c.eval.counterfactual_pairs, c.eval.counterfactual_scales = 2, (0.5, 1.0)
    c.eval.manipulate_nonzero, c.eval.manipulate_examples = 2, 1


def _cifar10(c) -> None:
    c.name = "diffsiam_cifar10"
    c.data = data_config("cifar10", "", 32, random_flip=True)
    c.model = pdae_config("", c.data).model
    c.model.frozen_dm_diffusers = "checkpoints/ddpm-cifar10-32"
    c.train = pdae_config("", c.data).train
    c.eval = pdae_config("", c.data).eval


def _transfer(name: str):
    """The 'transfer_<name>' variant (module docstring): 'cifar10' with the probe data swapped."""
    def apply(c) -> None:
        _cifar10(c)
        c.name = f"diffsiam_cifar10_transfer_{name}"
        c.data = data_config(f"transfer_{name}", "", 32)
        c.data.train_split, c.data.eval_split, c.data.split_seed = "trainval", "test", 0
        c.eval.probe_val_examples, c.eval.probe_metric = TRANSFER_PROBES[name]
        c.eval.probe_refit = True
    return apply
