"""Locally masked PixelCNN (LMConv, seed 004 ch. 2; `fdm.models.lmconv`): the paper's runs
and CPU runs on data with a known answer.

  python -m experiments.main --config=configs/lmconv.py --workdir=DIR           # CIFAR-10
  python -m experiments.main --config=configs/lmconv.py:binarized_mnist --workdir=DIR
  python -m experiments.main --config=configs/lmconv.py:rectangles8 --workdir=DIR
  python -m experiments.main --config=configs/lmconv.py:digits --workdir=DIR
  (--mode=evaluate: results.json + DIR/lmconv_eval.npz; --mode=sample: DIR/samples/)

Default: CIFAR-10 (TFDS `cifar10` prepared under data.data_dir), the paper's 46M-parameter
network (F = 160, 5 blocks per stage, k = 3, dilation 2, PONO, no dropout, 10 logistics),
8 S-curve orders, batch 32, Adam 2e-4 decayed by (1 - 5e-6) per step, 2.6M steps
(Table 2.2: 2.91 bpd with 1 order, 2.89 with 8). The paper averages the parameters of
the last 45 epochs; here the trainer's EMA (0.9999) stands in for it.
'binarized_mnist': TFDS `binarized_mnist` (the fixed binarisation; the authors' code
binarised MNIST afresh each pass), a 2-way softmax, 250K steps (160 epochs; Table 2.1:
78.47 nats with 1 order, 77.58 with 8; bits here, nats = bits x ln 2).
'rectangles8': the 1296 filled rectangles of 8x8 binary images (`fdm.data.rectangles`,
entropy 10.3399 bits), F = 32, 1 block per stage, 6000 steps of batch 32 at 2e-3 decayed
by (1 - 5e-4) per step, evaluated on every rectangle (about 0.4 CPU-s per step).
'digits': scikit-learn's 8x8 digits on 17 levels with 10 logistics, F = 32.
'smoke': a few steps of a tiny rectangles8 model (tests).

Builders: `lmconv_config(...)` declares every key the family reads with its default;
`lmconv_defaults()` is the family's `config_defaults`.
"""
import ml_collections

from configs import variants
from configs.fdm_common import data_config, loop_keys


def get_config(variant: str = ""):
    """CIFAR-10; variants in the module doc."""
    return variants.apply(_cifar10(), variant, {
        "binarized_mnist": _binarized_mnist, "rectangles8": _rectangles8, "digits": _digits,
        "smoke": _smoke})


def lmconv_config(name: str, *, dataset: str, data_dir: str, image_size: int, channels: int,
                  num_bins: int, likelihood: str = "logistic_mixture", features: int = 160,
                  num_res: int = 5, num_steps: int = 2_600_000,
                  batch_size: int = 32) -> ml_collections.ConfigDict:
    """Every key of an LMConv experiment with its default (the paper's settings)."""
    c = ml_collections.ConfigDict()
    c.name = name
    c.data = data_config(dataset, data_dir, image_size)

    c.model = ml_collections.ConfigDict()
    c.model.family = "lmconv"
    c.model.features = features          # F filters
    c.model.num_res = num_res            # gated ResNets per stage (down pass: R, R+1, R+1)
    c.model.kernel_size = 3
    c.model.dilation = 2                 # the LMConvs between stages
    c.model.method = "shifted"           # shifted (k² masked matmuls) | im2col (one matmul)
    c.model.channels = channels          # image channels C
    c.model.num_bins = num_bins          # levels per channel (256: 8 bits)
    c.model.likelihood = likelihood      # logistic_mixture | categorical (C = 1, binary data)
    c.model.num_mix = 10                 # logistics in the mixture
    c.model.order = "s_curve"            # raster | s_curve | hilbert
    c.model.num_orders = 8               # training orders: its first N dihedral variants

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = num_steps
    c.train.batch_size = batch_size
    c.train.learning_rate = 2e-4
    c.train.lr_decay = 5e-6              # learning rate x (1 - lr_decay) per step
    c.train.grad_clip = 2e6 / batch_size  # the paper's 2e6 on a batch sum, on the batch mean
    loop_keys(c.train, ema_decay=0.9999, log_every=100, checkpoint_every=10_000,
              keep_checkpoints=3, image_every=50_000)  # this family writes no images

    c.eval = ml_collections.ConfigDict()
    c.eval.num_examples = 10_000         # eval images whose NLLs are averaged
    c.eval.batch_size = 32
    c.eval.novel_orders = ("raster",)    # orders not trained on (§2.6.2)
    c.eval.num_samples = 16              # unconditional samples along order 0
    c.eval.num_completions = 8           # eval images whose halves are completed
    c.eval.at_end = False                # after training: evaluate and sample (fdm.run)
    return c


def lmconv_defaults() -> ml_collections.ConfigDict:
    """Every LMConv key at its default (`LMConvFamily.config_defaults`)."""
    return lmconv_config("", dataset="", data_dir="", image_size=0, channels=3, num_bins=256)


def _cifar10():
    return lmconv_config("lmconv_cifar10", dataset="cifar10", data_dir="", image_size=32,
                         channels=3, num_bins=256)


def _binarized_mnist(c) -> None:
    c.name = "lmconv_binarized_mnist"
    c.data.dataset, c.data.image_size = "binarized_mnist", 28
    c.model.channels, c.model.num_bins, c.model.likelihood = 1, 2, "categorical"
    c.train.num_steps = 250_000


def _cpu_sizes(c, name: str, dataset: str) -> None:
    """The CPU runs on 8x8 images: F = 32, 1 block per stage, at_end evaluation."""
    c.name = name
    c.data.dataset, c.data.image_size = dataset, 8
    c.model.features, c.model.num_res = 32, 1
    c.model.method = "im2col"            # faster than shifted at this size (BENCHMARKS.md)
    c.train.num_steps, c.train.batch_size = 6000, 32
    c.train.learning_rate, c.train.lr_decay, c.train.ema_decay = 2e-3, 5e-4, 0.995
    c.train.log_every, c.train.checkpoint_every = 100, 1000
    c.train.image_every = 100_000        # > num_steps: no image pass at all
    c.eval.novel_orders = ("raster", "hilbert")
    c.eval.batch_size, c.eval.num_samples, c.eval.num_completions = 120, 64, 12
    c.eval.at_end = True


def _rectangles8(c) -> None:
    _cpu_sizes(c, "lmconv_rectangles8", "rectangles")
    c.model.channels, c.model.num_bins, c.model.likelihood = 1, 2, "categorical"
    c.eval.num_examples, c.eval.batch_size = 1296, 144   # every rectangle once


def _digits(c) -> None:
    _cpu_sizes(c, "lmconv_digits", "digits")
    c.model.channels, c.model.num_bins = 1, 17
    c.eval.num_examples = 360                            # the whole eval split


def _smoke(c) -> None:
    _rectangles8(c)
    c.name = "lmconv_smoke"
    c.model.features = 8
    c.train.num_steps, c.train.batch_size = 2, 8
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 1, 2, 1000
    c.eval.num_examples, c.eval.batch_size = 16, 8
    c.eval.num_samples, c.eval.num_completions = 2, 2
