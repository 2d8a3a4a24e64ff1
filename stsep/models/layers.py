"""Building blocks shared by the spiking ResNet and the STSep block.

Provides the neuron settings of a model (:class:`NeuronSettings`), the STSep
settings (:class:`STSepSettings`), and :class:`TimeFolded`, which runs a
frame-wise layer (convolution, BN, pooling) on ``[T * B, ...]`` so that only
stateful neurons loop over time steps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

import torch
from torch import nn

from stsep.neurons import LIF, NonStatefulNeuron, SpikingNeuron
from stsep.surrogate import SURROGATES, resolve_alpha

__all__ = [
    "FUSIONS",
    "NeuronSettings",
    "STSepSettings",
    "TimeFolded",
    "conv_bn",
]

logger = logging.getLogger(__name__)

FUSIONS: Final[tuple[str, ...]] = ("add", "gate")


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class NeuronSettings:
    """Settings shared by every neuron of a model (see :class:`stsep.neurons.LIF`).

    ``alpha=None`` selects the surrogate's default (2.0 for ATan, 4.0 for sigmoid).
    """

    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float = 0.0
    soft_reset: bool = False
    detach_reset: bool = True
    learnable_tau: bool = False
    surrogate: str = "atan"
    alpha: float | None = None

    def __post_init__(self) -> None:
        if _check_number("tau", self.tau) <= 1.0:
            raise ValueError(f"tau must be greater than 1, got {self.tau!r}")
        if _check_number("v_threshold", self.v_threshold) <= _check_number("v_reset", self.v_reset):
            raise ValueError(
                f"v_threshold ({self.v_threshold}) must be greater than v_reset ({self.v_reset})"
            )
        for name in ("soft_reset", "detach_reset", "learnable_tau"):
            _check_flag(name, getattr(self, name))
        if self.surrogate not in SURROGATES:
            raise ValueError(
                f"surrogate must be one of {', '.join(SURROGATES)}, got {self.surrogate!r}"
            )
        resolve_alpha(self.surrogate, self.alpha)

    def make(self, *, stateful: bool) -> SpikingNeuron:
        """Return a new LIF (``stateful=True``) or non-stateful neuron with these settings."""
        neuron_class = LIF if stateful else NonStatefulNeuron
        return neuron_class(
            tau=self.tau,
            v_threshold=self.v_threshold,
            v_reset=self.v_reset,
            surrogate=self.surrogate,
            alpha=self.alpha,
            detach_reset=self.detach_reset,
            soft_reset=self.soft_reset,
            learnable_tau=self.learnable_tau,
        )


@dataclass(frozen=True)
class STSepSettings:
    """Settings of the STSep blocks.

    Attributes:
        ds: average-pooling factor of the temporal branch (spatial downsampling).
        dc: channel reduction of the temporal branch (``planes // dc`` channels).
        lam: balance ``lambda`` of the temporal branch in the fusion.
        learnable_lam: train ``lambda`` as a parameter of each block.
        fusion: ``"add"`` (``Y = spatial + lambda * temporal``) or ``"gate"``
            (``Y = spatial * (1 + lambda * sigmoid(temporal))``).
    """

    ds: int = 2
    dc: int = 4
    lam: float = 0.5
    learnable_lam: bool = False
    fusion: str = "add"

    def __post_init__(self) -> None:
        for name in ("ds", "dc"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _check_number("lam", self.lam)
        _check_flag("learnable_lam", self.learnable_lam)
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")


class TimeFolded(nn.Module):
    """Apply a frame-wise module to a sequence by folding time into the batch.

    Input ``[T, B, ...]``; the wrapped module sees ``[T * B, ...]``; output
    ``[T, B, ...]``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num_steps, batch = x.shape[:2]
        y = self.module(x.flatten(0, 1))  # [T, B, ...] -> [T * B, ...]
        return y.unflatten(0, (num_steps, batch))  # [T * B, ...] -> [T, B, ...]


def conv_bn(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int,
    stride: int = 1,
) -> TimeFolded:
    """Return a time-folded convolution (no bias, ``padding = kernel_size // 2``) and BN."""
    return TimeFolded(
        nn.Sequential(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size=kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        )
    )
