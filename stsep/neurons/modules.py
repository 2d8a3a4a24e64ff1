"""Multi-step spiking neuron modules: LIF and the non-stateful neuron (NSN).

Both neurons take input ``[T, B, ...]`` (time step first) and return spikes of
the same shape and dtype. They follow Dong, Yu, Ding, Xu, Huang 2025,
"Unleashing Temporal Capacity of Spiking Neural Networks through Spatiotemporal
Separation":

LIF (stateful), decay-input form::

    H[t] = V[t-1] + (X[t] - (V[t-1] - v_reset)) / tau       charge
    S[t] = Heaviside(H[t] - v_threshold)                     fire
    V[t] = H[t] (1 - S[t]) + v_reset S[t]                    hard reset
    V[t] = H[t] - v_threshold S[t]                           soft reset
    V[-1] = v_reset

NSN: the same neuron with its membrane potential reset to ``v_reset`` before
every time step, so ``H[t] = v_reset + X[t] / tau`` depends on no other time
step and runs on all ``T * B`` samples at once.

Neither module keeps a membrane potential between forward calls: every call
starts from ``V[-1] = v_reset``, so no state leaks from one batch to the next
and there is nothing to reset.

Two execution paths give the same spikes:

- fused (default for a fixed ``tau``): one autograd node per call, see
  :mod:`stsep.neurons.kernels`; bit-identical spikes to SpikingJelly 2.0's
  ``LIFNode``;
- phase-wise: :meth:`LIF.neuronal_charge`, :meth:`LIF.neuronal_fire` and
  :meth:`LIF.neuronal_reset` per time step with autograd through each phase.
  It is used for a learnable ``tau`` (gradient to ``tau``) and when
  ``fused=False``, and serves as the readable reference in tests.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from stsep.neurons.kernels import LIFMultiStep, NonStatefulStep, compute_dtype
from stsep.surrogate import resolve_alpha, spike_function

__all__ = ["LIF", "NonStatefulNeuron", "SpikingNeuron"]

logger = logging.getLogger(__name__)


class SpikingNeuron(nn.Module):
    """Settings and phases shared by :class:`LIF` and :class:`NonStatefulNeuron`.

    Args:
        tau: membrane time constant, > 1.
        v_threshold: firing threshold.
        v_reset: reset (and resting) potential; ``V[-1] = v_reset``.
        surrogate: surrogate gradient, ``"atan"`` or ``"sigmoid"``.
        alpha: surrogate shape parameter; None gives 2.0 for ATan and 4.0 for
            sigmoid (SpikingJelly's defaults).
        detach_reset: detach the spike in the reset term from the graph.
        soft_reset: subtract ``v_threshold`` on a spike instead of setting
            ``V = v_reset``.
        learnable_tau: make ``1 / tau`` a trainable parameter (parametric LIF),
            stored as ``tau_logit`` with ``1 / tau = sigmoid(tau_logit)``.
        fused: use the fused kernel when ``tau`` is fixed; False forces the
            phase-wise path.
    """

    def __init__(
        self,
        *,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float = 0.0,
        surrogate: str = "atan",
        alpha: float | None = None,
        detach_reset: bool = True,
        soft_reset: bool = False,
        learnable_tau: bool = False,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau > 1.0:
            raise ValueError(f"tau must be a number greater than 1, got {tau!r}")
        for name, value in (("v_threshold", v_threshold), ("v_reset", v_reset)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not v_threshold > v_reset:
            raise ValueError(
                f"v_threshold ({v_threshold}) must be greater than v_reset ({v_reset})"
            )
        for name, value in (
            ("detach_reset", detach_reset),
            ("soft_reset", soft_reset),
            ("learnable_tau", learnable_tau),
            ("fused", fused),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")

        self.v_threshold = float(v_threshold)
        self.v_reset = float(v_reset)
        self.surrogate = surrogate
        self.alpha = resolve_alpha(surrogate, alpha)
        self.detach_reset = detach_reset
        self.soft_reset = soft_reset
        self.learnable_tau = learnable_tau
        self.fused = fused
        self._spike = spike_function(surrogate)
        if learnable_tau:
            # sigmoid(-log(tau - 1)) = 1 / tau.
            self.tau_logit = nn.Parameter(torch.tensor(-math.log(tau - 1.0)))
        else:
            self._tau = float(tau)

    @property
    def tau(self) -> float:
        """Membrane time constant (current value when it is learnable)."""
        if self.learnable_tau:
            return float(1.0 / torch.sigmoid(self.tau_logit.detach()))
        return self._tau

    def _inverse_tau(self, dtype: torch.dtype) -> torch.Tensor | float:
        if self.learnable_tau:
            return torch.sigmoid(self.tau_logit).to(dtype)
        return 1.0 / self._tau

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a tensor, got {type(x).__name__}")
        if x.dim() < 2:
            raise ValueError(
                f"{type(self).__name__} expects input [T, B, ...] with at least 2 "
                f"dimensions, got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}")

    # Phases of one time step, called by the phase-wise path and the tests.

    def neuronal_charge(self, x_t: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        """Return ``H = V + (X - (V - v_reset)) / tau`` (``v=None`` means ``V = v_reset``)."""
        if self.learnable_tau:
            decay = self._inverse_tau(x_t.dtype)
            if v is None:
                return x_t * decay + self.v_reset
            return v + (x_t - (v - self.v_reset)) * decay
        if v is None:
            return x_t / self._tau + self.v_reset
        return v + (x_t - (v - self.v_reset)) / self._tau

    def neuronal_fire(self, h: torch.Tensor) -> torch.Tensor:
        """Return spikes ``S = Heaviside(H - v_threshold)`` with the surrogate gradient."""
        return self._spike.apply(h - self.v_threshold, self.alpha)

    def neuronal_reset(self, h: torch.Tensor, spike: torch.Tensor) -> torch.Tensor:
        """Return the membrane potential after a hard or soft reset."""
        if self.detach_reset:
            spike = spike.detach()
        if self.soft_reset:
            return h - self.v_threshold * spike
        return spike * self.v_reset + (1.0 - spike) * h

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau:.4g}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"surrogate={self.surrogate}, alpha={self.alpha}, detach_reset={self.detach_reset}, "
            f"soft_reset={self.soft_reset}, learnable_tau={self.learnable_tau}"
        )


class LIF(SpikingNeuron):
    """Multi-step leaky integrate-and-fire neuron with input and output ``[T, B, ...]``.

    Arguments as in :class:`SpikingNeuron`. The membrane potential is carried
    from time step ``t - 1`` to ``t`` inside one call only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.fused and not self.learnable_tau:
            return LIFMultiStep.apply(
                x,
                self._tau,
                self.v_threshold,
                self.v_reset,
                self.soft_reset,
                self.detach_reset,
                self.surrogate,
                self.alpha,
            )
        return self._forward_phases(x)

    def _forward_phases(self, x: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(x.dtype)
        spikes = []
        v = None
        for x_t in x.to(dtype):
            h = self.neuronal_charge(x_t, v)
            spike = self.neuronal_fire(h)
            v = self.neuronal_reset(h, spike)
            spikes.append(spike)
        return torch.stack(spikes).to(x.dtype)


class NonStatefulNeuron(SpikingNeuron):
    """Non-stateful neuron (NSN): LIF with ``V[t-1] = v_reset`` at every time step.

    Input and output ``[T, B, ...]``; the reset options are accepted so that
    one set of settings configures both neurons, but they have no effect
    because nothing is carried to the next time step.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.fused and not self.learnable_tau:
            return NonStatefulStep.apply(
                x, self._tau, self.v_threshold, self.v_reset, self.surrogate, self.alpha
            )
        dtype = compute_dtype(x.dtype)
        h = self.neuronal_charge(x.to(dtype), None)
        return self.neuronal_fire(h).to(x.dtype)
