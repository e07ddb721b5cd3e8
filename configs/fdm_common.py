"""Config builders of the DDPM, FDM and DFM families: where every key they read is declared.

`ddpm_config(...)` declares every key the DDPM family (`fdm.models.ddpm`), the data
pipeline and the trainer read, with its default; `fdm_config(...)` is a DDPM config
plus the mask keys of FDM (`fdm.models.fdm`, `fdm.nn.factorized`), its search aids
and evaluation, and the baselines of the tables; `given_mask_keys` adds the keys of
the given-mask probe (`fdm.models.mask_probe`). Each experiment's config calls one
builder with what differs; the result has the sections data, model, diffusion,
train, eval (SPEC's command-line contract). Valid values of the keys: the families'
`config_rules` (`fdm.config_rules`). `dfm_config(name, data)` declares every key of
diffusion with forward models (`fdm.models.dfm`) on a data section. Dataset-specific
data keys (data.num_train, data.eval_split, ...) are declared with their defaults in
`fdm.data.DATASETS`.
Paper settings (seed 000 §2.4 "Implementation Details"): U-Net encoder/middle/
decoder as in Ho et al., mask generator = decoder-shaped, K = 3, C = 128, Adam 1e-4,
EMA 0.9999, linear β, T = 1000.
"""
import ml_collections


def data_config(dataset: str, data_dir: str, image_size, eval_dataset: str = "",
                eval_data_dir: str = "", random_flip: bool = False) -> ml_collections.ConfigDict:
    """The data keys every config has (`fdm.data`): the source of each split, the image
    size, the seed of the train stream and its horizontal flips."""
    return ml_collections.ConfigDict(dict(
        dataset=dataset,
        data_dir=data_dir,
        eval_dataset=eval_dataset,      # "" = evaluate on data.dataset (fdm.data doc)
        eval_data_dir=eval_data_dir,    # "" = data.data_dir
        image_size=image_size,
        random_flip=random_flip,
        seed=0))



def loop_keys(train: ml_collections.ConfigDict, *, ema_decay: float, log_every: int,
              checkpoint_every: int, keep_checkpoints: int, image_every: int,
              seed: int = 0) -> None:
    """Declares the keys every family's train section shares with the generic loop
    (`fdm.train.trainer`): train.{ema_decay, seed, log_every, checkpoint_every (and at
    the end), keep_checkpoints (newest kept), image_every (image summaries), init_from
    (a workdir whose newest EMA params start a fresh run, '' = none: the warm start)}."""
    train.ema_decay = ema_decay
    train.seed = seed
    train.init_from = ""
    train.log_every = log_every
    train.checkpoint_every = checkpoint_every
    train.keep_checkpoints = keep_checkpoints
    train.image_every = image_every

def precision_keys(model: ml_collections.ConfigDict) -> None:
    """Declares the precision and memory keys of a model section (BENCHMARKS.md "Memory and
    FLOPs"): model.dtype, the compute dtype ("float32" | "bfloat16": bfloat16 activations,
    convolutions and matmuls; parameters, optimizer state, normalisation statistics,
    softmaxes and the loss stay float32; `fdm.nn.layers.compute_dtype`) and model.remat,
    what the backward pass recomputes instead of storing ("none"; the families' rules
    list the others, e.g. "resblock" and FDM's "branch", `fdm.nn.factorized`). NeRF
    lifting (configs/toy_scene.py:lifting_config) declares both here too; its remat
    is "chunk" (the field per model.remat_chunk rays, `fdm.models.lifting`)."""
    model.dtype = "float32"
    model.remat = "none"


def ddpm_config(name: str, *, dataset: str, data_dir: str, image_size: int, ch_mult,
                num_res_blocks: int, num_steps: int, batch_size: int = 128, ch: int = 128,
                num_classes: int = 0, dropout: float = 0.0, attn_resolutions=(16,),
                eval_dataset: str = "", eval_data_dir: str = "") -> ml_collections.ConfigDict:
    """Every key of a DDPM experiment with its default; the arguments are what differs."""
    c = ml_collections.ConfigDict()
    c.name = name
    c.data = data_config(dataset, data_dir, image_size, eval_dataset, eval_data_dir,
                         random_flip=True)

    c.model = ml_collections.ConfigDict()
    c.model.family = "ddpm"
    c.model.ch = ch
    c.model.ch_mult = tuple(ch_mult)
    c.model.num_res_blocks = num_res_blocks
    c.model.attn_resolutions = tuple(attn_resolutions)
    c.model.dropout = dropout
    c.model.num_classes = num_classes  # > 0: class-conditional on the batches' 'label'
    c.model.num_groups = 32
    c.model.out_ch = 3                 # image channels C (the U-Net outputs 2C: learned variance)
    precision_keys(c.model)

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.num_timesteps = 1000
    c.diffusion.beta_schedule = "linear"
    c.diffusion.beta_start = 1e-4
    c.diffusion.beta_end = 0.02
    c.diffusion.prediction = "eps"           # eps | x0
    c.diffusion.loss = "simple"              # simple | weighted | vlb (the bound L, bits/dim) |
                                             # min_snr (Min-SNR-gamma, fdm.diffusion.losses)
    c.diffusion.min_snr_gamma = 5.0          # gamma of min_snr
    c.diffusion.min_snr_floor = 0.0          # min_snr's weight is clip(SNR_t, floor, gamma)
    # fixed_small (beta_tilde) | fixed_large (beta) | learned | learned_range (diffusion.reverse)
    c.diffusion.variance = "fixed_small"
    c.diffusion.clip_x0 = True
    c.diffusion.decoder_cdf = "exact"        # exact (log_ndtr) | tanh (Ho et al.'s code)
    # Training t: uniform | loss_aware (t ~ sqrt(E[L_t^2]) over the last t_history losses
    # of each t, importance-weighted; Improved DDPM's sampler for L, fdm.diffusion.timesteps)
    c.diffusion.t_sampling = "uniform"
    c.diffusion.t_history = 10

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = num_steps
    c.train.batch_size = batch_size
    c.train.learning_rate = 1e-4
    c.train.grad_clip = 1.0
    # Per-subtree schedule knobs (ModelFamily.optimizer): name -> factor / steps.
    c.train.lr_multipliers = ml_collections.ConfigDict()
    c.train.frozen_steps = ml_collections.ConfigDict()
    c.train.warmup_steps = 0         # linear learning-rate warm-up of every subtree
    loop_keys(c.train, ema_decay=0.9999, log_every=100, checkpoint_every=5000,
              keep_checkpoints=3, image_every=5000)

    c.eval = ml_collections.ConfigDict()
    c.eval.num_examples = 64
    c.eval.batch_size = 64
    c.eval.sampler = "ancestral"     # ancestral (Alg. 2) | ddim (fast previews)
    c.eval.sample_steps = 100        # DDIM steps (ancestral always takes T)
    c.eval.ddim_eta = 0.0
    c.eval.sample_stats = True
    c.eval.metric_weights = ""       # .npz of docs/METRICS.md: adds fid / kid / kid_std
    c.eval.num_fid_samples = 10_000  # generated images scored against all eval images
    c.eval.at_end = False            # after training: evaluate and sample (fdm.run)
    c.eval.bpd_examples = 0          # > 0: bound (bits/dim) of this many eval images, T calls each
    c.eval.record_every = 100        # sampler trajectory: x0_hat strip (and FDM's masks, Fig. 2.10)
    return c


def fdm_config(name: str, *, num_masks: int = 3, **ddpm_args) -> ml_collections.ConfigDict:
    """A DDPM config (`ddpm_config(name, **ddpm_args)`) plus every key FDM adds."""
    c = ddpm_config(name, **ddpm_args)
    c.model.family = "fdm"
    c.model.num_masks = num_masks
    c.model.decoding = "shared"      # shared | unshared | mask_hmid | concat (Table 2.6)
    c.model.mask_init_scale = 1e-2   # small random init of the mask generator output
    c.model.mask_skip_max_res = 0    # mask generator reads every skip (the paper)
    c.model.branch_embed_std = 0.0   # > 0: learned per-branch embedding added to the decoder's temb
    c.model.hierarchical = False     # 2-level FDM (appendix 2.5.1)
    c.model.level2_masks = 3

    # Per-subtree schedule knobs (ModelFamily.optimizer); the paper uses none of them.
    c.train.lr_multipliers = ml_collections.ConfigDict({"mask_generator": 1.0})
    c.train.frozen_steps = ml_collections.ConfigDict({"mask_generator": 0})
    # Search aids for the mask generator (fdm/models/fdm_search.py); off in the paper.
    c.train.mask_prior_steps = 0     # > 0: warm start on a centred blob for this many steps
    c.train.mask_prior_sigma = 0.35  # the blob's sigma, a fraction of the half-width
    c.train.mask_prior_weight = 1.0  # weight of its cross-entropy during the warm start
    c.train.mask_z_loss = 0.0        # weight of the router z-loss on the mask logits

    c.eval.segment_t = 30            # §2.3.4: noise real images to t = 30, one pass
    c.eval.segmenter_workdir = ""    # a --baseline=supervised workdir: adds gen_seg_* (Table 2.5)
    c.eval.num_gen_seg_samples = 64  # generated images whose masks that segmenter scores

    # Baselines of Tables 2.1-2.5 (experiments/baselines.py, fdm.baselines).
    c.baselines = ml_collections.ConfigDict()
    c.baselines.num_train_images = 0  # > 0: eval images [:n] train, [n:] test; 0: data splits
    c.baselines.kmeans_clusters = 3   # DatasetDDPM-unsup: K of k-means
    c.baselines.kmeans_timesteps = (50, 150, 250)   # DDPM decoder features at these t
    c.baselines.kmeans_fit_pixels = 50_000          # pixels of the train images k-means sees
    c.baselines.supervised_steps = 2000             # supervised U-Net: Adam steps
    c.baselines.supervised_batch_size = 32
    c.baselines.supervised_learning_rate = 1e-3
    c.baselines.grabcut_size = 128    # GrabCut runs on the photos at this size (0: image_size)
    c.baselines.grabcut_margin = 0.05  # init rectangle: centred, this fraction off each side
    c.baselines.grabcut_iters = 5
    c.baselines.histogram_bins = 16   # colour histogram: bins per RGB channel (B^3 in all)
    return c


def given_mask_keys(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An FDM config `c` turned into the given-mask probe (`fdm.models.mask_probe`), in place."""
    c.model.family = "fdm_given_masks"
    c.model.given_mask_alpha = 1.0   # 1 = exact masks, 0 = uniform masks
    c.model.given_mask_shift = 0     # pixels the masks are rolled down and right
    return c


def dfm_config(name: str, data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Every key of a diffusion-with-forward-models experiment (`fdm.models.dfm`, seed 003)
    with its default (the brief's choices: x0, cosine T = 1000, Eq. 8 : Eq. 9 = 1 : 1,
    DDIM-50), on the data section `data` (a `data_config` with the dataset's own keys)."""
    c = ml_collections.ConfigDict()
    c.name = name
    c.data = data

    c.model = ml_collections.ConfigDict()
    c.model.family = "dfm"
    c.model.forward = "linear_gaussian"  # the forward model and its scores (fdm.forward.problems)
    c.model.network = "mlp"              # the denoiser network: mlp (fdm.nn.mlp.TimeMLP) on the
                                         # flattened input | unet (fdm.nn.unet.UNet, image S)
                                         # | pixelnerf (the scenes' own, fdm.forward.pixelnerf)
    c.model.deterministic = False        # True: S from the context alone, no diffusion (baseline)
    c.model.mlp = ml_collections.ConfigDict(dict(
        width=256, depth=3, time_embed_dim=64,
        time_conditioning="input"))      # t at the input (brief) | film: every layer (DiT's adaLN)
    c.model.unet = ml_collections.ConfigDict(dict(   # the brief's T2 U-Net (middle block attends)
        ch=32, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(), num_groups=8))
    c.model.pixelnerf = ml_collections.ConfigDict(dict(  # the scenes' field (Sec. 4.1); its
        features=16,        # encoder is model.unet: F, the channels of the feature maps
        det_features=8,     # G, the features rendered into O_det beside colour and depth
        width=64, view_blocks=2, joint_blocks=1,   # ResnetFC: blocks per view, after the mean
        num_freqs=6,        # positional-encoding frequencies of the view-frame points
        num_samples=32,     # bins per ray of forward(S, phi)
        det_samples=16,     # bins per ray of O_det
        time_mlp=True,      # Dense(t-embedding) in every ResnetFC block (brief D6); False:
                            # t only through the features (the field before D6)
        image_features=False,  # True: each view's image (the context, O^trgt_t) appended
                            # to its feature map, so the field reads the colour at the
                            # projected point itself (F + 3 channels in S)
        density_from_context=False))  # True: sigma from the context's code alone (not in
                            # the paper): S's geometry fixed by the context, shared by samples

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.num_timesteps = 1000
    c.diffusion.beta_schedule = "cosine"
    c.diffusion.beta_start = 1e-4            # linear / quadratic schedules only
    c.diffusion.beta_end = 0.02
    c.diffusion.prediction = "x0"            # the denoiser's output is forward(S, phi^trgt)
    c.diffusion.loss = "simple"              # Eq. 8 over t: simple (the paper's, weight 1) |
                                             # min_snr (min(SNR_t, gamma): low noise up-weighted)
    c.diffusion.min_snr_gamma = 5.0          # gamma of min_snr (fdm.diffusion.losses)
    c.diffusion.min_snr_floor = 0.0          # min_snr's weight is clip(SNR_t, floor, gamma);
                                             # 1: the noisiest steps weigh as in simple
    c.diffusion.clip_x0 = True               # clip O_hat^trgt to [-1, 1] in sampling
    c.diffusion.dynamic_threshold = 0.0      # Imagen's dynamic thresholding of O_hat^trgt at
                                             # this percentile in sampling (0: off; code 0.95)

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 5000
    c.train.batch_size = 256
    c.train.learning_rate = 1e-3
    c.train.lr_final_factor = 1.0            # exponential decay to this x at num_steps
    c.train.grad_clip = 1.0
    c.train.novel_weight = 1.0               # weight of L^novel (Eq. 9); 0: the ablation
    c.train.context_dropout = 0.0            # P(context -> null context) in training (CFG;
                                             # the paper's RealEstate10K: 0.1)
    c.train.cond_weight = 0.0                # the scenes' regularisers (0: off): L_cond on O_det,
    c.train.depth_smoothness_weight = 0.0    # edge-aware depth smoothness (paper: 0.02 with
    c.train.distortion_weight = 0.0          # distortion), mip-NeRF 360 distortion,
    c.train.opacity_entropy_weight = 0.0     # binary entropy of opacity (not in the paper)
    loop_keys(c.train, ema_decay=0.999, log_every=100, checkpoint_every=1000,
              keep_checkpoints=2, image_every=1000)

    c.eval = ml_collections.ConfigDict()
    c.eval.at_end = True                     # after training: evaluate and sample (fdm.run)
    c.eval.batch_size = 20                   # eval tuples per batch of the loss pass
    c.eval.num_contexts = 20                 # held-out contexts whose posterior is scored
    c.eval.samples_per_context = 1000
    c.eval.sampler = "ddim"                  # ddim | renoise (Eq. 6: O_hat re-noised)
    c.eval.sample_steps = 50
    c.eval.ddim_eta = 0.0
    c.eval.guidance_scale = 1.0              # classifier-free guidance w (1: conditional;
                                             # needs train.context_dropout > 0; paper: 2)
    c.eval.num_examples = 8                  # --mode=sample: contexts in the figure
    c.eval.one_step_t = ()                   # timesteps of the one-step spread (fdm.models.dfm)
    c.eval.reuse_samples = False             # score DIR/posterior_samples.npz, do not resample
    return c


def dfm_smoke(c: ml_collections.ConfigDict, num_eval: int) -> None:
    """The tests' 'smoke' sizes of a `dfm_config`: two steps of a tiny MLP on 64 training
    tuples and num_eval evaluation tuples, a 20-step diffusion, 5 sampling steps."""
    c.data.num_train, c.data.num_eval = 64, num_eval
    c.model.mlp.width, c.model.mlp.depth, c.model.mlp.time_embed_dim = 16, 2, 8
    c.diffusion.num_timesteps = 20
    c.train.num_steps, c.train.batch_size, c.train.lr_final_factor = 2, 8, 1.0
    c.train.log_every, c.train.checkpoint_every, c.train.image_every = 1, 2, 1000
    c.eval.samples_per_context, c.eval.sample_steps, c.eval.num_examples = 16, 5, 2


def dfm_defaults() -> ml_collections.ConfigDict:
    """Every DFM key at its default (`DFMFamily.config_defaults`), on the linear-Gaussian data."""
    return dfm_config("", data_config("linear_gaussian", "", 8))


def _placeholders() -> dict:
    """The required builder arguments, for the defaults below (a saved config has them)."""
    return dict(dataset="", data_dir="", image_size=0, ch_mult=(), num_res_blocks=1,
                num_steps=0)


def ddpm_defaults() -> ml_collections.ConfigDict:
    """Every DDPM key at its default (`DDPMFamily.config_defaults`)."""
    return ddpm_config("", **_placeholders())


def fdm_defaults() -> ml_collections.ConfigDict:
    """Every FDM key at its default (`FDMFamily.config_defaults`)."""
    return fdm_config("", **_placeholders())


def given_mask_defaults() -> ml_collections.ConfigDict:
    """Every key of the given-mask probe at its default."""
    return given_mask_keys(fdm_defaults())


def size_128(c: ml_collections.ConfigDict) -> None:
    """Variant '128' of a 64x64 paper config (cub, ffhq, flowers): the paper's 128x128
    model (channels [1, 1, 2, 3, 4], 2 blocks; seed 000 §2.4), named NAME128, in place."""
    c.name += "128"
    c.data.image_size = 128
    c.model.ch_mult, c.model.num_res_blocks = (1, 1, 2, 3, 4), 2
