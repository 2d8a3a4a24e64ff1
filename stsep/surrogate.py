"""Surrogate gradients for the Heaviside spike function.

A spiking neuron fires ``S = Heaviside(H - v_threshold)``, whose derivative is
zero almost everywhere. Training replaces that derivative in the backward pass
with a smooth surrogate gradient ``sg(x)`` of ``x = H - v_threshold``:

- ATan (the default of Dong, Yu, Ding, Xu, Huang 2025, "Unleashing Temporal
  Capacity of Spiking Neural Networks through Spatiotemporal Separation"):
  ``sg(x) = alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2)``, ``alpha = 2``.
- Sigmoid: ``sg(x) = alpha * sigmoid(alpha * x) * (1 - sigmoid(alpha * x))``,
  ``alpha = 4``.

Both match the definitions of SpikingJelly 2.0 (``surrogate.ATan`` and
``surrogate.Sigmoid``), including ``Heaviside(0) = 1``. The gradient is
evaluated in float32 for float16 and bfloat16 inputs, so it stays finite for
membrane potentials far from the threshold.
"""

from __future__ import annotations

import logging
import math
from typing import Final

import torch

__all__ = [
    "DEFAULT_ALPHA",
    "SURROGATES",
    "ATanSpike",
    "SigmoidSpike",
    "heaviside",
    "resolve_alpha",
    "spike_function",
    "surrogate_gradient",
    "surrogate_primitive",
]

logger = logging.getLogger(__name__)

SURROGATES: Final[tuple[str, ...]] = ("atan", "sigmoid")

# SpikingJelly 2.0's defaults for the shape parameter of each surrogate.
DEFAULT_ALPHA: Final[dict[str, float]] = {"atan": 2.0, "sigmoid": 4.0}


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """Return ``1`` where ``x >= 0`` and ``0`` elsewhere, in the dtype of ``x``."""
    return (x >= 0).to(x.dtype)


def _check_surrogate(name: str) -> None:
    if name not in SURROGATES:
        raise ValueError(
            f"unknown surrogate {name!r}, expected one of {', '.join(SURROGATES)}"
        )


def resolve_alpha(surrogate: str, alpha: float | None) -> float:
    """Return ``alpha``, or the default of ``surrogate`` when ``alpha`` is None.

    Raises:
        ValueError: if the surrogate name is unknown or ``alpha`` is not positive.
    """
    _check_surrogate(surrogate)
    if alpha is None:
        return DEFAULT_ALPHA[surrogate]
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    return float(alpha)


def surrogate_gradient(x: torch.Tensor, *, surrogate: str, alpha: float) -> torch.Tensor:
    """Evaluate the surrogate gradient ``dS/dH`` at ``x = H - v_threshold``.

    Args:
        x: membrane potential minus threshold, any shape.
        surrogate: ``"atan"`` or ``"sigmoid"``.
        alpha: shape parameter (steepness) of the surrogate.

    Returns:
        A new tensor of the same shape as ``x``, in float32 when ``x`` is
        float16 or bfloat16 (the caller casts back), else in the dtype of ``x``.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if surrogate == "atan":
        # alpha / 2 / (1 + (pi / 2 * alpha * x)^2), computed in place on one buffer.
        scaled = x * (math.pi / 2 * alpha)
        scaled.mul_(scaled).add_(1.0)
        return scaled.reciprocal_().mul_(alpha / 2)
    if surrogate == "sigmoid":
        sig = (x * alpha).sigmoid_()
        return sig.mul_(1.0 - sig).mul_(alpha)
    _check_surrogate(surrogate)
    raise AssertionError("unreachable")


def surrogate_primitive(x: torch.Tensor, *, surrogate: str, alpha: float) -> torch.Tensor:
    """Evaluate the smooth function whose derivative is the surrogate gradient.

    ATan: ``arctan(pi / 2 * alpha * x) / pi + 1 / 2``, and sigmoid:
    ``sigmoid(alpha * x)``. Both tend to the Heaviside step as ``alpha`` grows.
    """
    if surrogate == "atan":
        return torch.atan(x * (math.pi / 2 * alpha)) / math.pi + 0.5
    if surrogate == "sigmoid":
        return torch.sigmoid(x * alpha)
    _check_surrogate(surrogate)
    raise AssertionError("unreachable")


class ATanSpike(torch.autograd.Function):
    """Heaviside spike in the forward pass, ATan surrogate gradient backward.

    ``ATanSpike.apply(x, alpha)`` with ``x = H - v_threshold``. With a third
    argument ``smooth=True`` the forward pass returns the primitive
    ``arctan(pi / 2 * alpha * x) / pi + 1 / 2`` instead of spikes, so the
    backward pass can be checked numerically (``torch.autograd.gradcheck``).
    """

    @staticmethod
    def forward(x: torch.Tensor, alpha: float, smooth: bool = False) -> torch.Tensor:
        if smooth:
            return surrogate_primitive(x, surrogate="atan", alpha=alpha)
        return heaviside(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.alpha = inputs[1]

    @staticmethod
    def backward(ctx, grad_spike: torch.Tensor):
        (x,) = ctx.saved_tensors
        sg = surrogate_gradient(x, surrogate="atan", alpha=ctx.alpha)
        return (grad_spike * sg).to(grad_spike.dtype), None, None


class SigmoidSpike(torch.autograd.Function):
    """Heaviside spike in the forward pass, sigmoid surrogate gradient backward.

    ``SigmoidSpike.apply(x, alpha)`` with ``x = H - v_threshold``. With a third
    argument ``smooth=True`` the forward pass returns the primitive
    ``sigmoid(alpha * x)`` instead of spikes, for numerical gradient checks.
    """

    @staticmethod
    def forward(x: torch.Tensor, alpha: float, smooth: bool = False) -> torch.Tensor:
        if smooth:
            return surrogate_primitive(x, surrogate="sigmoid", alpha=alpha)
        return heaviside(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.alpha = inputs[1]

    @staticmethod
    def backward(ctx, grad_spike: torch.Tensor):
        (x,) = ctx.saved_tensors
        sg = surrogate_gradient(x, surrogate="sigmoid", alpha=ctx.alpha)
        return (grad_spike * sg).to(grad_spike.dtype), None, None


_SPIKE_FUNCTIONS: Final[dict[str, type[torch.autograd.Function]]] = {
    "atan": ATanSpike,
    "sigmoid": SigmoidSpike,
}


def spike_function(surrogate: str) -> type[torch.autograd.Function]:
    """Return the autograd function that fires spikes with the named surrogate.

    Raises:
        ValueError: if the name is not one of :data:`SURROGATES`.
    """
    _check_surrogate(surrogate)
    return _SPIKE_FUNCTIONS[surrogate]
