"""Fused multi-step LIF and non-stateful neuron kernels as autograd functions.

Each function runs the whole sequence ``[T, B, ...]`` in one autograd node:
the forward pass loops over time steps into preallocated buffers and the
backward pass evaluates the surrogate gradient for all time steps at once,
leaving only one fused multiply-add per time step inside the reverse loop. Per
neuron and time step the node saves the charged membrane potential ``H`` (in
float32, or float64 for float64 input) and the output spikes, which the next
layer keeps alive anyway. The arithmetic of the forward pass follows
SpikingJelly 2.0's ``LIFNode`` operation by operation, so the spikes are
bit-identical to it.

The equations are those of Dong, Yu, Ding, Xu, Huang 2025, "Unleashing
Temporal Capacity of Spiking Neural Networks through Spatiotemporal
Separation" (decay-input LIF)::

    H[t] = V[t-1] + (X[t] - (V[t-1] - v_reset)) / tau       charge
    S[t] = Heaviside(H[t] - v_threshold)                     fire
    V[t] = H[t] (1 - S[t]) + v_reset S[t]                    hard reset
    V[t] = H[t] - v_threshold S[t]                           soft reset
    V[-1] = v_reset

Backward, with ``sg[t]`` the surrogate gradient at ``H[t]`` and
``R[t] = dV[t] / dH[t]`` (``1 - S[t]`` for a hard reset with the spike
detached)::

    dL/dH[t] = dL/dS[t] sg[t] + dL/dH[t+1] (1 - 1 / tau) R[t]
    dL/dX[t] = dL/dH[t] / tau
"""

from __future__ import annotations

import logging
import math

import torch

from stsep.surrogate import surrogate_gradient

__all__ = ["LIFMultiStep", "NonStatefulStep", "compute_dtype"]

logger = logging.getLogger(__name__)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype in which membrane potentials are computed for ``dtype`` input.

    float16 and bfloat16 inputs are charged in float32, as SpikingJelly does,
    so that spikes and gradients stay accurate. float64 stays float64.
    """
    return torch.promote_types(dtype, torch.float32)


def _scalar(value: float, *, like: torch.Tensor) -> torch.Tensor:
    """Return a 0-dim tensor holding ``value`` with the dtype and device of ``like``."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _scaled_surrogate_gradient(
    h: torch.Tensor,
    grad_spike: torch.Tensor,
    *,
    v_threshold: float,
    surrogate: str,
    alpha: float,
    scale: float,
) -> torch.Tensor:
    """Return ``grad_spike * sg(h - v_threshold) * scale`` in a new buffer of h's dtype.

    The ATan case is rewritten as ``grad_spike / (1 / a + c * (h - v_th)^2)``
    with ``a = scale * alpha / 2`` and ``c = (pi / 2 * alpha)^2 / a``, which
    needs three passes over the tensor instead of six.
    """
    if surrogate == "atan":
        amplitude = scale * alpha / 2
        curvature = (math.pi / 2 * alpha) ** 2 / amplitude
        out = torch.sub(h, v_threshold)
        # out = 1 / amplitude + curvature * (h - v_th)^2, in place.
        torch.addcmul(
            _scalar(1.0 / amplitude, like=h), out, out, value=curvature, out=out
        )
        torch.div(grad_spike, out, out=out)
        return out

    out = surrogate_gradient(h - v_threshold, surrogate=surrogate, alpha=alpha)
    out.mul_(grad_spike)
    if scale != 1.0:
        out.mul_(scale)
    return out


def _charge(
    x_t: torch.Tensor,
    v: torch.Tensor | None,
    *,
    tau: float,
    v_reset: float,
    h_out: torch.Tensor,
    scratch: torch.Tensor,
) -> None:
    """Write ``H = V + (X - (V - v_reset)) / tau`` into ``h_out`` (``v=None`` means V = v_reset)."""
    if v is None:
        # V - v_reset is exactly zero at the first time step.
        torch.div(x_t, tau, out=h_out)
        if v_reset != 0.0:
            h_out.add_(v_reset)
        return
    if v_reset == 0.0:
        torch.sub(x_t, v, out=scratch)
    else:
        torch.sub(v, v_reset, out=scratch)
        torch.sub(x_t, scratch, out=scratch)
    torch.addcdiv(v, scratch, _scalar(tau, like=v), out=h_out)


def _reset(
    h: torch.Tensor,
    spike: torch.Tensor,
    *,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    v_out: torch.Tensor,
) -> None:
    """Write the membrane potential after the reset into ``v_out``."""
    if soft_reset:
        torch.sub(h, spike, alpha=v_threshold, out=v_out)
    elif v_reset == 0.0:
        # H - H * S is exactly H where S = 0 and exactly 0 where S = 1.
        torch.addcmul(h, h, spike, value=-1.0, out=v_out)
    else:
        torch.where(spike.bool(), _scalar(v_reset, like=h), h, out=v_out)


class LIFMultiStep(torch.autograd.Function):
    """Fused LIF over all time steps: ``LIFMultiStep.apply(x, tau, v_threshold,
    v_reset, soft_reset, detach_reset, surrogate, alpha)``.

    ``x`` is ``[T, B, ...]``, and the spikes ``[T, B, ...]`` have the dtype of
    ``x``. ``tau`` is a fixed float (a learnable tau takes the unfused path).
    """

    @staticmethod
    def forward(ctx, x, tau, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha):
        x = x.contiguous()
        dtype = compute_dtype(x.dtype)
        needs_grad = ctx.needs_input_grad[0]
        num_steps = x.shape[0]
        step_shape = x.shape[1:]

        spikes = torch.empty_like(x)
        # Training keeps H for every time step, inference only the current one.
        h_seq = torch.empty(x.shape, dtype=dtype, device=x.device) if needs_grad else None
        h_step = None if needs_grad else torch.empty(step_shape, dtype=dtype, device=x.device)
        v = None
        v_buffer = torch.empty(step_shape, dtype=dtype, device=x.device)
        scratch = torch.empty(step_shape, dtype=dtype, device=x.device)

        for t in range(num_steps):
            h = h_seq[t] if needs_grad else h_step
            x_t = x[t] if x.dtype == dtype else x[t].to(dtype)

            # charge
            _charge(x_t, v, tau=tau, v_reset=v_reset, h_out=h, scratch=scratch)

            # fire
            torch.ge(h, v_threshold, out=spikes[t])

            # reset
            _reset(
                h,
                spikes[t],
                v_threshold=v_threshold,
                v_reset=v_reset,
                soft_reset=soft_reset,
                v_out=v_buffer,
            )
            v = v_buffer

        if needs_grad:
            ctx.save_for_backward(h_seq, spikes)
        ctx.settings = (tau, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        h_seq, spikes = ctx.saved_tensors
        tau, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha = ctx.settings
        decay = 1.0 - 1.0 / tau
        num_steps = h_seq.shape[0]

        if detach_reset:
            # grad_x[t] = dL/dS[t] sg[t] / tau, then the recurrence adds the future.
            grad_x = _scaled_surrogate_gradient(
                h_seq,
                grad_spikes,
                v_threshold=v_threshold,
                surrogate=surrogate,
                alpha=alpha,
                scale=1.0 / tau,
            )
            carry_factor = None
        else:
            sg = surrogate_gradient(h_seq - v_threshold, surrogate=surrogate, alpha=alpha)
            grad_x = (grad_spikes * sg).div_(tau)
            # R = dV/dH with the spike's gradient kept in the reset.
            if soft_reset:
                carry_factor = torch.sub(1.0, sg, alpha=v_threshold)
            else:
                carry_factor = torch.sub(1.0, spikes.to(h_seq.dtype))
                carry_factor.addcmul_(torch.sub(v_reset, h_seq), sg)
            carry_factor.mul_(decay)

        step_factor = torch.empty(h_seq.shape[1:], dtype=h_seq.dtype, device=h_seq.device)
        decay_tensor = _scalar(decay, like=h_seq)
        for t in range(num_steps - 2, -1, -1):
            if carry_factor is not None:
                grad_x[t].addcmul_(grad_x[t + 1], carry_factor[t])
            elif soft_reset:
                grad_x[t].add_(grad_x[t + 1], alpha=decay)
            else:
                # (1 - 1/tau) (1 - S[t]) for a hard reset with the spike detached.
                torch.sub(decay_tensor, spikes[t], alpha=decay, out=step_factor)
                grad_x[t].addcmul_(grad_x[t + 1], step_factor)

        return grad_x.to(grad_spikes.dtype), None, None, None, None, None, None, None


class NonStatefulStep(torch.autograd.Function):
    """Non-stateful neuron on all samples at once: ``NonStatefulStep.apply(x,
    tau, v_threshold, v_reset, surrogate, alpha)``.

    With ``V[t-1] = v_reset`` at every time step the charge is
    ``H = v_reset + X / tau``, so any layout works (``[T, B, ...]`` or
    ``[T * B, ...]``). The spikes have the shape and dtype of ``x``.
    """

    @staticmethod
    def forward(ctx, x, tau, v_threshold, v_reset, surrogate, alpha):
        dtype = compute_dtype(x.dtype)

        # charge (same operations as the LIF's first time step)
        h = torch.div(x.to(dtype) if x.dtype != dtype else x, tau)
        if v_reset != 0.0:
            h.add_(v_reset)

        # fire. There is no reset because the next time step starts from v_reset again.
        spikes = torch.empty_like(x, memory_format=torch.contiguous_format)
        torch.ge(h, v_threshold, out=spikes)

        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(h)
        ctx.settings = (tau, v_threshold, surrogate, alpha)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        (h,) = ctx.saved_tensors
        tau, v_threshold, surrogate, alpha = ctx.settings
        grad_x = _scaled_surrogate_gradient(
            h,
            grad_spikes,
            v_threshold=v_threshold,
            surrogate=surrogate,
            alpha=alpha,
            scale=1.0 / tau,
        )
        return grad_x.to(grad_spikes.dtype), None, None, None, None, None
