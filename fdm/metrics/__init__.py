"""Evaluation metrics (numpy, host-side).

Probes of frozen features (seed 002, `fdm.metrics.probes`): `linear_probe` (L-BFGS
logistic regression, C chosen on val), `factor_probes` (one per labelled factor),
`segment_probes` (per segment of z), `pixel_probes` (the raw-pixel baseline) and
`few_shot_eval` (Table 4.2's 5-way episodes, sampled by `sample_episodes`).
Sparse attribute classifiers (seed 002 Alg. 3, `fdm.metrics.probmask`):
`fit_sparse_classifier` (ProbMask, d' non-zero weights) and its manipulation direction.
Invariance of a code to an augmentation (seed 002's SimSiam argument,
`fdm.metrics.invariance`): `relative_invariance`, how far a view moves z against how far
apart two images' codes are (1: not at all, 0: as far).
Calibration of a conditional sampler (`fdm.metrics.calibration`): `spread_skill_ratio`,
the samples' spread against the error of their mean (1 when calibrated).
"""
