"""Fused multi-step LIF and non-stateful neuron kernels as autograd functions.

On the CPU, float32 LIF input runs the compiled kernel of
`stsep.neurons.fused` (one pass over memory forward, one backward, at about
3.4 times the memory floor with fresh output buffers). The eager kernels
below serve every other case: GPUs, other dtypes, a machine without a
compiler, and the backward pass of a reset that keeps its gradient.

Each function runs the whole sequence ``[T, B, ...]`` in one autograd node.
The forward pass loops over time steps into preallocated buffers, and the
backward pass evaluates the surrogate gradient for all time steps at once,
leaving two fused operations per time step inside the reverse loop. Per neuron
and time step the node saves the charged membrane potential ``H`` (in
float32, or float64 for float64 input) and the output spikes, which the next
layer keeps alive anyway. The arithmetic of the forward pass follows
SpikingJelly 2.0's ``LIFNode`` operation by operation, so the spikes are
bit-identical to it.

For the default hard reset to ``v_reset = 0`` the forward pass carries the
negated potentials ``U = -V`` and ``-H``. Negation is exact in floating point,
so every value is the exact negative of SpikingJelly's, and ``torch.threshold``
then applies the reset in one operation: ``-H`` where ``H < v_threshold``,
else 0. That leaves three operations per time step instead of four, and the
spikes of all time steps are computed in one operation after the loop.

Every operation covers a whole time step of the batch. Splitting the batch
into cache-sized chunks was measured and dropped, because it multiplies the
operator calls. Each call is an OpenMP parallel region on the CPU or a kernel
launch on a GPU, and on a 2-core machine shared with other jobs the chunked
LIF ran up to ten times slower. Chunks over the neurons of a time step, with
``H`` recomputed in the backward pass instead of saved, were measured again
with huge pages (below) and were no faster than whole time steps.

Buffers of at least ``HUGE_PAGE_MIN_BYTES`` (the spikes, ``H`` and the input
gradient of large layers) ask Linux for transparent huge pages with
``madvise``. glibc maps buffers of that size fresh for every call, so with
4 KiB pages the first write to each page faults. On the 2-core benchmark
machine, allocating and filling a 51 MB float32 tensor
(``[8, 16, 128, 28, 28]``) took about 13 ms with 4 KiB pages, 5 ms with huge
pages and 1 ms for a reused buffer. With one thread, huge pages cut the LIF's
forward and backward pass on that shape from about 105 ms to 85 ms.

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

import ctypes
import logging
import math
import sys
from typing import Any

import torch

from stsep.neurons import fused
from stsep.surrogate import surrogate_gradient

__all__ = ["LIFMultiStep", "NonStatefulStep", "compute_dtype"]

logger = logging.getLogger(__name__)

# glibc serves every allocation above 32 MiB (its largest mmap threshold on
# 64-bit) with fresh pages from the kernel, while smaller buffers usually
# reuse freed heap pages that fault no more.
# NOTE: the advice has no effect where /sys/kernel/mm/transparent_hugepage/enabled
# contains "never", and huge pages are the default where it contains "always".
HUGE_PAGE_MIN_BYTES = 32 << 20
# Surrogate codes of csrc/fused_lif.cpp.
_COMPILED_SURROGATES = {"atan": 0, "sigmoid": 1}
_MADV_HUGEPAGE = 14  # from <linux/mman.h>
_PAGE_BYTES = 4096


def _load_madvise():
    """Return libc's ``madvise`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        logger.debug("madvise is unavailable, so large buffers keep the default page size")
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _load_madvise()


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype in which membrane potentials are computed for ``dtype`` input.

    float16 and bfloat16 inputs are charged in float32, as SpikingJelly does,
    so that spikes and gradients stay accurate. float64 stays float64.
    """
    return torch.promote_types(dtype, torch.float32)


def _empty_output(like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return ``torch.empty_like(like, dtype=dtype)``, backed by huge pages if it is a large CPU tensor."""
    out = torch.empty_like(like, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    if _madvise is None or out.device.type != "cpu" or nbytes < HUGE_PAGE_MIN_BYTES:
        return out
    # madvise takes whole pages, and the kernel uses huge pages for the
    # 2 MiB-aligned parts of the range. The result is ignored because a failed
    # hint only leaves the default pages.
    start = -(-out.data_ptr() // _PAGE_BYTES) * _PAGE_BYTES
    end = (out.data_ptr() + nbytes) // _PAGE_BYTES * _PAGE_BYTES
    _madvise(start, end - start, _MADV_HUGEPAGE)
    return out


def _compiled_kernel(x: torch.Tensor) -> Any | None:
    """Return the compiled fused LIF for ``x`` where it applies: float32 on the CPU, each time step dense."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.numel() == 0 or not _steps_are_dense(x):
        return None
    return fused.load()


def _as_steps(tensor: torch.Tensor) -> torch.Tensor:
    """View a tensor whose time steps are dense blocks as a contiguous ``[T, N]``, whatever its layout.

    The compiled kernel is elementwise within a time step, so any layout works
    as long as every tensor it gets shares it.
    """
    steps = tensor.shape[0]
    return tensor.as_strided((steps, tensor.numel() // steps), (tensor.numel() // steps, 1))


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
) -> torch.Tensor:
    """Return ``grad_spike * sg(h - v_threshold) * scale`` in a new buffer of h's dtype.

    With ``negated=True``, ``h`` contains ``-H``. The ATan case is rewritten as
    ``grad_spike / (1 / a + c * (h - v_th)^2)`` with ``a = scale * alpha / 2``
    and ``c = (pi / 2 * alpha)^2 / a``, which needs three passes over the
    tensor instead of six, and since it squares ``h - v_th`` it takes
    ``-H + v_th`` unchanged.
    """
    if surrogate == "atan":
        amplitude = scale * alpha / 2
        curvature = (math.pi / 2 * alpha) ** 2 / amplitude
        out = _empty_output(h)
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
    out = surrogate_gradient(distance, surrogate=surrogate, alpha=alpha)
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

    Returns ``-H`` for every time step when ``keep_potentials`` is set, else None.
    """
    num_steps = x.shape[0]
    neg_h_seq = _empty_output(x, dtype=dtype) if keep_potentials else None
    neg_h_step = None if keep_potentials else torch.empty_like(x[0], dtype=dtype)
    u = None  # U = -V; None means V = v_reset = 0
    u_buffer = torch.empty_like(x[0], dtype=dtype)
    scratch = torch.empty_like(x[0], dtype=dtype)
    tau_tensor = _scalar(tau, like=u_buffer)

    for t in range(num_steps):
        neg_h = neg_h_seq[t] if keep_potentials else neg_h_step
        x_t = x[t] if x.dtype == dtype else x[t].to(dtype)

        # charge: -H = U - (X + U) / tau, the negative of V + (X - V) / tau.
        if u is None:
            torch.div(x_t, -tau, out=neg_h)
        else:
            torch.add(x_t, u, out=scratch)
            torch.addcdiv(u, scratch, tau_tensor, value=-1.0, out=neg_h)

        # fire, here only at inference. Training fires all time steps after the loop.
        if not keep_potentials:
            torch.le(neg_h, -v_threshold, out=spikes[t])

        # reset: U = -H where -H > -v_threshold (no spike), else 0.
        torch.threshold(neg_h, -v_threshold, 0.0, out=u_buffer)
        u = u_buffer

    if keep_potentials:
        # fire: S = Heaviside(H - v_threshold) = (-H <= -v_threshold).
        torch.le(neg_h_seq, -v_threshold, out=spikes)
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
    h_seq = _empty_output(x, dtype=dtype) if keep_potentials else None
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
        spikes = _empty_output(x)
        compiled = _compiled_kernel(x)

        # With a hard reset to 0, the eager h_seq contains -H (see the module docstring).
        negated = compiled is None and not soft_reset and v_reset == 0.0
        if compiled is not None:
            if needs_grad:
                h_seq = _empty_output(x)
                h_out = _as_steps(h_seq)
            else:
                # Inference needs no H, and the kernel skips writing an empty one.
                h_seq, h_out = None, x.new_empty((0,))
            compiled.lif_forward(_as_steps(x), _as_steps(spikes), h_out, tau, v_threshold, v_reset, soft_reset)
        elif negated:
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
        ctx.compiled = compiled
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        h_seq, spikes = ctx.saved_tensors
        (
            tau, v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha, negated
        ) = ctx.settings
        decay = 1.0 - 1.0 / tau
        num_steps = h_seq.shape[0]

        if ctx.compiled is not None and detach_reset and grad_spikes.dtype == torch.float32:
            if grad_spikes.stride() != h_seq.stride():
                grad_spikes = torch.empty_like(h_seq).copy_(grad_spikes)
            grad_x = _empty_output(h_seq)
            ctx.compiled.lif_backward(
                _as_steps(grad_spikes), _as_steps(h_seq), _as_steps(grad_x), tau, v_threshold, alpha, soft_reset,
                _COMPILED_SURROGATES[surrogate],
            )
            return grad_x, None, None, None, None, None, None, None

        if detach_reset:
            # grad_x[t] = dL/dS[t] sg[t] / tau, then the recurrence adds the future.
            grad_x = _scaled_surrogate_gradient(
                h_seq,
                grad_spikes,
                v_threshold=v_threshold,
                surrogate=surrogate,
                alpha=alpha,
                scale=1.0 / tau,
                negated=negated,
            )
            carry_factor = None
        else:
            if negated:
                h_seq = torch.neg(h_seq)
            sg = surrogate_gradient(h_seq - v_threshold, surrogate=surrogate, alpha=alpha)
            grad_x = torch.mul(grad_spikes, sg, out=_empty_output(h_seq)).div_(tau)
            # R = dV/dH with the spike's gradient kept in the reset.
            if soft_reset:
                carry_factor = torch.sub(1.0, sg, alpha=v_threshold)
            else:
                carry_factor = torch.sub(1.0, spikes.to(h_seq.dtype))
                carry_factor.addcmul_(torch.sub(v_reset, h_seq), sg)
            carry_factor.mul_(decay)

        step_factor = torch.empty_like(h_seq[0])
        decay_tensor = _scalar(decay, like=h_seq)
        for t in range(num_steps - 2, -1, -1):
            if carry_factor is not None:
                grad_x[t].addcmul_(grad_x[t + 1], carry_factor[t])
            elif soft_reset:
                grad_x[t].add_(grad_x[t + 1], alpha=decay)
            else:
                # (1 - 1/tau) (1 - S[t]) for a hard reset with the spike detached,
                # computed in h_seq's dtype also for float16 spikes.
                spikes_t = spikes[t]
                if spikes_t.dtype != step_factor.dtype:
                    spikes_t = step_factor.copy_(spikes_t)
                torch.sub(decay_tensor, spikes_t, alpha=decay, out=step_factor)
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
        h = torch.div(x.to(dtype) if x.dtype != dtype else x, tau, out=_empty_output(x, dtype))
        if v_reset != 0.0:
            h.add_(v_reset)

        # fire. There is no reset because the next time step starts from v_reset again.
        spikes = _empty_output(x)
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
