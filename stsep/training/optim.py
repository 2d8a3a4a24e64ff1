"""Optimizers and the learning-rate schedule: linear warm-up, then cosine decay.

The schedule is stepped once per optimizer step. During the warm-up the rate
rises linearly from ``lr / warmup_steps`` to ``lr``; afterwards it follows
``lr * 0.5 * (1 + cos(pi * progress))`` down to zero at the last step, where
``progress`` runs from 0 to 1 over the remaining steps.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from stsep.config import TrainConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]

logger = logging.getLogger(__name__)


def build_optimizer(model: nn.Module, *, train: TrainConfig) -> torch.optim.Optimizer:
    """Build SGD (with momentum) or AdamW for `model`.

    Weight decay applies to weights of convolutions and linear layers only;
    biases, BatchNorm parameters and neuron parameters (learnable time
    constants, fusion balances) are not decayed.
    """
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim > 1 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, nesterov=train.momentum > 0)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train.lr, betas=(train.momentum, 0.999))
    raise ValueError(f"unknown optimizer {train.optimizer!r}; allowed: sgd, adamw")


def lr_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Return the multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Build the per-step warm-up and cosine schedule of `optimizer`."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps=warmup_steps, total_steps=total_steps)
    )
