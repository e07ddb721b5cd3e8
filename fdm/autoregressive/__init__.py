"""Autoregressive image models with any generation order (seed 004 ch. 2, LMConv): orders,
the discretized logistic mixture likelihood, ensembles over orders, completion and
sampling in any order. Pure math (numpy / jax), no flax modules; the network is
`fdm.nn.lmconv_net`, the model family `fdm.models.lmconv`.
"""
