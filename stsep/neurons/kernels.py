"""Fused multi-step LIF and non-stateful neuron kernels as autograd functions.

Each function runs the whole sequence ``[T, B, ...]`` in one autograd node.
The forward pass loops over time steps into preallocated buffers, and the
backward pass runs the reverse recurrence with a few fused operations per time
step and no autograd graph inside. Per neuron and time step the node saves the
charged membrane potential ``H`` (in float32, or float64 for float64 input)
and the output spikes, which the next layer keeps alive anyway. The arithmetic of the forward pass follows
SpikingJelly 2.0's ``LIFNode`` operation by operation, so the spikes are
bit-identical to it.

For the default hard reset to ``v_reset = 0`` the forward pass carries the
negated potentials ``U = -V`` and ``-H``. Negation is exact in floating point,
so every value is the exact negative of SpikingJelly's, and ``torch.threshold``
then applies the reset in one operation: ``-H`` where ``H < v_threshold``,
else 0. The forward pass of this case and the backward pass with a detached
reset run per chunk of the batch (``CHUNK_ELEMENTS`` per time step), so the
buffers that one time step reads and writes stay in cache.

The kernels keep the memory layout of their input when every time step is
one dense block (contiguous, or ``[T, B, ...]`` unflattened from a
channels-last ``[T * B, C, H, W]``), so a channels-last network pays no copy
per neuron.

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

# Elements per time step in one chunk of the batch (512 KiB in float32). The
# few per-step buffers of a chunk then fit in a core's L2 cache (1 to 2 MiB on
# current x86 server CPUs), so the time loop streams only its inputs and
# outputs through memory. Each chunk costs a few more operator calls.
CHUNK_ELEMENTS = 1 << 17


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
    negated: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``grad_spike * sg(h - v_threshold) * scale`` in ``out`` or a new buffer of h's dtype.

    With ``negated=True``, ``h`` contains ``-H``. The ATan case is rewritten as
    ``grad_spike / (1 / a + c * (h - v_th)^2)`` with ``a = scale * alpha / 2``
    and ``c = (pi / 2 * alpha)^2 / a``, which needs three passes over the
    tensor instead of six, and since it squares ``h - v_th`` it takes
    ``-H + v_th`` unchanged.
    """
    if surrogate == "atan":
        amplitude = scale * alpha / 2
        curvature = (math.pi / 2 * alpha) ** 2 / amplitude
        if out is None:
            out = torch.empty_like(h)
        if negated:
            torch.add(h, v_threshold, out=out)
        else:
            torch.sub(h, v_threshold, out=out)
        # out = 1 / amplitude + curvature * (h - v_th)^2, in place.
        torch.addcmul(
            _scalar(1.0 / amplitude, like=h), out, out, value=curvature, out=out
        )
        torch.div(grad_spike, out, out=out)
        return out

    distance = torch.add(h, v_threshold).neg_() if negated else h - v_threshold
    gradient = surrogate_gradient(distance, surrogate=surrogate, alpha=alpha)
    gradient.mul_(grad_spike)
    if scale != 1.0:
        gradient.mul_(scale)
    if out is None:
        return gradient
    return out.copy_(gradient)


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


def _steps_are_dense(x: torch.Tensor) -> bool:
    """Return True when each time step of ``x`` (``[T, ...]``) is one dense block.

    Such a tensor can be sliced per time step and mirrored by ``empty_like``
    without a copy, whatever the order of its other dimensions.
    """
    if x.dim() < 2 or x.stride(0) != x[0].numel():
        return x.shape[0] == 1 and x.is_contiguous()
    step_dims = sorted(
        (stride, size) for size, stride in zip(x.shape[1:], x.stride()[1:]) if size != 1
    )
    expected = 1
    for stride, size in step_dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _batch_chunks(x: torch.Tensor) -> list[slice]:
    """Split dim 1 (batch) of ``x`` (``[T, B, ...]``) into slices of about ``CHUNK_ELEMENTS`` per time step."""
    batch = x.shape[1]
    per_sample = max(1, x[0, 0].numel()) if batch else 1
    samples = max(1, CHUNK_ELEMENTS // per_sample)
    return [slice(start, min(start + samples, batch)) for start in range(0, batch, samples)]


def _forward_reset_to_zero(
    x: torch.Tensor,
    spikes: torch.Tensor,
    *,
    tau: float,
    v_threshold: float,
    dtype: torch.dtype,
    keep_potentials: bool,
) -> torch.Tensor | None:
    """Run the LIF with a hard reset to 0 on negated potentials, writing ``spikes``.

    Loops over chunks of the batch, and within a chunk over time steps, so
    that the per-step buffers stay in cache.

    Returns ``-H`` for every time step when ``keep_potentials`` is set, else None.
    """
    num_steps = x.shape[0]
    chunks = _batch_chunks(x)
    if not chunks:
        return torch.empty_like(x, dtype=dtype) if keep_potentials else None
    width = chunks[0].stop - chunks[0].start
    neg_h_seq = torch.empty_like(x, dtype=dtype) if keep_potentials else None
    neg_h_buffer = None if keep_potentials else torch.empty_like(x[0, :width], dtype=dtype)
    u_buffer = torch.empty_like(x[0, :width], dtype=dtype)
    scratch_buffer = torch.empty_like(x[0, :width], dtype=dtype)
    tau_tensor = _scalar(tau, like=u_buffer)

    for chunk in chunks:
        size = chunk.stop - chunk.start
        u_next, scratch = u_buffer[:size], scratch_buffer[:size]
        u = None  # U = -V; None means V = v_reset = 0
        for t in range(num_steps):
            neg_h = neg_h_seq[t, chunk] if keep_potentials else neg_h_buffer[:size]
            x_t = x[t, chunk] if x.dtype == dtype else x[t, chunk].to(dtype)

            # charge: -H = U - (X + U) / tau, the negative of V + (X - V) / tau.
            if u is None:
                torch.div(x_t, -tau, out=neg_h)
            else:
                torch.add(x_t, u, out=scratch)
                torch.addcdiv(u, scratch, tau_tensor, value=-1.0, out=neg_h)

            # fire: S = Heaviside(H - v_threshold) = (-H <= -v_threshold).
            torch.le(neg_h, -v_threshold, out=spikes[t, chunk])

            # reset: U = -H where -H > -v_threshold (no spike), else 0.
            torch.threshold(neg_h, -v_threshold, 0.0, out=u_next)
            u = u_next
    return neg_h_seq


def _forward_general(
    x: torch.Tensor,
    spikes: torch.Tensor,
    *,
    tau: float,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    dtype: torch.dtype,
    keep_potentials: bool,
) -> torch.Tensor | None:
    """Run the LIF with a soft reset or a nonzero ``v_reset``, writing ``spikes``.

    Returns ``H`` for every time step when ``keep_potentials`` is set, else None.
    """
    num_steps = x.shape[0]
    h_seq = torch.empty_like(x, dtype=dtype) if keep_potentials else None
    h_step = None if keep_potentials else torch.empty_like(x[0], dtype=dtype)
    v = None
    v_buffer = torch.empty_like(x[0], dtype=dtype)
    scratch = torch.empty_like(x[0], dtype=dtype)

    for t in range(num_steps):
        h = h_seq[t] if keep_potentials else h_step
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
    return h_seq


def _backward_detached(
    h_seq: torch.Tensor,
    spikes: torch.Tensor,
    grad_spikes: torch.Tensor,
    *,
    tau: float,
    v_threshold: float,
    soft_reset: bool,
    surrogate: str,
    alpha: float,
    negated: bool,
) -> torch.Tensor:
    """Return dL/dX of the LIF with the spike detached from the reset, in h_seq's dtype.

    ``grad_x[t] = dL/dS[t] sg[t] / tau + grad_x[t + 1] R[t] (1 - 1/tau)`` with
    ``R[t] = 1 - S[t]`` for a hard reset and 1 for a soft reset, computed per
    chunk of the batch and time step so that the chunk stays in cache.
    """
    num_steps = h_seq.shape[0]
    decay = 1.0 - 1.0 / tau
    grad_x = torch.empty_like(h_seq)
    chunks = _batch_chunks(h_seq)
    if not chunks:
        return grad_x
    width = chunks[0].stop - chunks[0].start
    factor_buffer = torch.empty_like(h_seq[0, :width])
    decay_tensor = _scalar(decay, like=h_seq)

    for chunk in chunks:
        factor = factor_buffer[: chunk.stop - chunk.start]
        for t in range(num_steps - 1, -1, -1):
            grad_t = grad_x[t, chunk]
            _scaled_surrogate_gradient(
                h_seq[t, chunk],
                grad_spikes[t, chunk],
                v_threshold=v_threshold,
                surrogate=surrogate,
                alpha=alpha,
                scale=1.0 / tau,
                negated=negated,
                out=grad_t,
            )
            if t == num_steps - 1:
                continue
            if soft_reset:
                grad_t.add_(grad_x[t + 1, chunk], alpha=decay)
                continue
            # factor = (1 - 1/tau) (1 - S[t]), computed in h_seq's dtype.
            spikes_t = spikes[t, chunk]
            if spikes_t.dtype != factor.dtype:
                spikes_t = factor.copy_(spikes_t)
            torch.sub(decay_tensor, spikes_t, alpha=decay, out=factor)
            grad_t.addcmul_(grad_x[t + 1, chunk], factor)
    return grad_x


class LIFMultiStep(torch.autograd.Function):
    """Fused LIF over all time steps: ``LIFMultiStep.apply(x, tau, v_threshold,
    v_reset, soft_reset, detach_reset, surrogate, alpha)``.

    ``x`` is ``[T, B, ...]``, and the spikes ``[T, B, ...]`` have the dtype and
    memory layout of ``x``. ``tau`` is a fixed float (a learnable tau takes the
    unfused path).
    """

    @staticmethod
    def forward(ctx, x, tau, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha):
        if not _steps_are_dense(x):
            x = x.contiguous()
        dtype = compute_dtype(x.dtype)
        # Training keeps H for every time step, inference only the current one.
        needs_grad = ctx.needs_input_grad[0]
        spikes = torch.empty_like(x)

        # With a hard reset to 0, h_seq contains -H (see the module docstring).
        negated = not soft_reset and v_reset == 0.0
        if negated:
            h_seq = _forward_reset_to_zero(
                x, spikes, tau=tau, v_threshold=v_threshold, dtype=dtype, keep_potentials=needs_grad
            )
        else:
            h_seq = _forward_general(
                x,
                spikes,
                tau=tau,
                v_threshold=v_threshold,
                v_reset=v_reset,
                soft_reset=soft_reset,
                dtype=dtype,
                keep_potentials=needs_grad,
            )

        if needs_grad:
            ctx.save_for_backward(h_seq, spikes)
        ctx.settings = (
            tau, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha, negated
        )
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        h_seq, spikes = ctx.saved_tensors
        (
            tau, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha, negated
        ) = ctx.settings
        decay = 1.0 - 1.0 / tau
        num_steps = h_seq.shape[0]

        if detach_reset:
            grad_x = _backward_detached(
                h_seq,
                spikes,
                grad_spikes,
                tau=tau,
                v_threshold=v_threshold,
                soft_reset=soft_reset,
                surrogate=surrogate,
                alpha=alpha,
                negated=negated,
            )
            return grad_x.to(grad_spikes.dtype), None, None, None, None, None, None, None

        if negated:
            h_seq = torch.neg(h_seq)
        sg = surrogate_gradient(h_seq - v_threshold, surrogate=surrogate, alpha=alpha)
        grad_x = (grad_spikes * sg).div_(tau)
        # R = dV/dH with the spike's gradient kept in the reset.
        if soft_reset:
            carry_factor = torch.sub(1.0, sg, alpha=v_threshold)
        else:
            carry_factor = torch.sub(1.0, spikes.to(h_seq.dtype))
            carry_factor.addcmul_(torch.sub(v_reset, h_seq), sg)
        carry_factor.mul_(decay)
        for t in range(num_steps - 2, -1, -1):
            grad_x[t].addcmul_(grad_x[t + 1], carry_factor[t])

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
        spikes = torch.empty_like(x)
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
