"""Seeded, non-degenerate random weights for presets and test models.

With transformers 5.2x a MobileViT built from a config has logits of about 1e-41 (its init leaves
weights on the meta-style "empty" path), so every numeric comparison would pass. We re-initialise
every layer with PyTorch's default init and give normalisation layers real statistics, so fp32 vs
int8 vs converter differences are visible, and timings are not distorted by denormals.

BatchNorm needs more than random statistics. With running variances drawn at random (0.5-1.5)
while the real activations have a std near 0.05, every BN layer of a random MobileViT shrank the
input-dependent part of its activations about tenfold against its bias: after five stages the
logits changed by 1.5e-8 between two different images while spanning 0.2, so an "artifact" that
returned a stored answer would have verified. A trained network's BN statistics describe the
activations it sees; `calibrate_batchnorm` gives random ones the same property by measuring them
on seeded inputs, as a trained model's would have been measured on data.
"""

from __future__ import annotations

import torch
from torch import nn

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def reinitialize(module: nn.Module, *, seed: int) -> nn.Module:
    """Overwrite all weights in place from `seed`; returns the module for chaining."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            for layer in module.modules():
                if isinstance(layer, _NORM_TYPES):
                    _randomize_norm(layer)
                elif hasattr(layer, "reset_parameters") and callable(layer.reset_parameters):
                    layer.reset_parameters()
            # Embedding tables and free parameters (e.g. positional embeddings) that no
            # reset_parameters covered: give them a small, non-zero spread.
            for name, param in module.named_parameters():
                if param.abs().max() == 0 and "bias" not in name:
                    param.normal_(0.0, 0.02)
    finally:
        torch.random.set_rng_state(generator_state)
    return module.eval()


def calibrate_batchnorm(module: nn.Module, batches: list[tuple[torch.Tensor, ...]]) -> nn.Module:
    """Set every BatchNorm's running mean/var to the statistics of the activations that
    `batches` produce (a cumulative average, as if trained on them); returns the module in eval.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return module.eval()
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all calibration batches
    module.eval()
    for m in norms:
        m.train()  # only the norms: dropout and friends stay in eval
    try:
        with torch.no_grad():
            for batch in batches:
                module(*batch)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
    return module.eval()


def _randomize_norm(layer: nn.Module) -> None:
    # Scales near 1 and shifts near 0 keep activations in range through deep stacks, while
    # still being different per channel (a converter that drops them would be caught).
    if getattr(layer, "weight", None) is not None:
        layer.weight.uniform_(0.8, 1.2)
    if getattr(layer, "bias", None) is not None:
        layer.bias.uniform_(-0.1, 0.1)
    if getattr(layer, "running_mean", None) is not None:
        layer.running_mean.uniform_(-0.1, 0.1)
        layer.running_var.uniform_(0.5, 1.5)
