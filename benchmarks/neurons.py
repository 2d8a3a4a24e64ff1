"""Benchmark the LIF and non-stateful neurons against SpikingJelly and a memory floor.

Times one forward and backward pass over an input ``[T, B, C, H, W]`` for:

- ``stsep LIF``: the fused kernel (default path);
- ``stsep LIF (phases)``: the phase-wise autograd path (learnable ``tau``);
- ``stsep NSN``: the non-stateful neuron;
- ``spikingjelly LIFNode``: SpikingJelly 2.0, multi-step, ATan surrogate,
  ``detach_reset=True`` (the same neuron as ``stsep LIF``);
- ``memory floor``: copying the bytes a fused LIF must move, measured in the
  same run. Forward reads X and writes spikes and H. Backward reads H and the
  spike gradient and writes the input gradient. The buffers are preallocated,
  so no allocation or page fault is included.

Usage: ``python benchmarks/neurons.py [--quick]``. :func:`run` returns the
rows for aggregation.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks._timing import format_rows, time_interleaved
from stsep.neurons import LIF, NonStatefulNeuron, fused

__all__ = ["DEFAULT_SHAPES", "run"]

logger = logging.getLogger(__name__)

DEFAULT_SHAPES: tuple[tuple[int, ...], ...] = ((8, 8, 64, 28, 28), (8, 16, 128, 28, 28))
QUICK_SHAPES: tuple[tuple[int, ...], ...] = ((8, 8, 64, 28, 28),)


def _spikingjelly_lif():
    """Return a SpikingJelly LIFNode and its reset function, or None if not installed."""
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except ImportError:
        logger.warning("spikingjelly is not installed; its rows are skipped")
        return None
    node = neuron.LIFNode(
        step_mode="m",
        tau=2.0,
        decay_input=True,
        v_reset=0.0,
        detach_reset=True,
        surrogate_function=surrogate.ATan(),
    )
    return node, functional.reset_net


def _forward_backward(module, x: torch.Tensor, grad: torch.Tensor, reset=None):
    def step() -> None:
        x.grad = None
        if reset is not None:
            reset(module)
        module(x).backward(grad)

    return step


def _memory_floor(x: torch.Tensor, grad: torch.Tensor):
    spikes = torch.empty_like(x)
    charged = torch.empty_like(x)
    grad_input = torch.empty_like(x)

    def step() -> None:
        spikes.copy_(x)  # forward: read X, write spikes
        charged.copy_(x)  # forward: write H (X is cache-hot, an optimistic floor)
        torch.add(charged, grad, out=grad_input)  # backward: read H and dL/dS, write dL/dX

    return step


def run(
    *,
    shapes: Sequence[Sequence[int]] = DEFAULT_SHAPES,
    repeats: int = 3,
    iterations: int = 5,
    include_phases: bool = True,
) -> list[dict[str, Any]]:
    """Time forward and backward of each neuron for each shape, interleaved.

    Returns:
        One dict per (shape, implementation): ``shape``, ``implementation``,
        ``median_ms``, ``min_ms``, ``cpu_ms``, ``vs_spikingjelly`` (SpikingJelly's median
        over this one's, so > 1 is faster), ``vs_spikingjelly_min`` and
        ``vs_spikingjelly_cpu`` (the same for the minima and for CPU time), ``vs_floor`` (this median over the floor's),
        ``repeats``, ``iterations``, ``threads``.
    """
    rows = []
    reference = _spikingjelly_lif()
    # Build or load the compiled LIF first, so that no timed call pays for it.
    compiled = fused.load()
    if compiled is None:
        logger.warning("the compiled fused LIF is unavailable, so stsep LIF runs the eager kernels")
    else:
        logger.info(
            "compiled fused LIF ready in %.1f s (a build on a machine's first run, then a cache load)",
            fused.compile_seconds(),
        )
    for shape in shapes:
        torch.manual_seed(0)
        x = (torch.randn(*shape) * 1.5 + 0.5).requires_grad_(True)
        grad = torch.randn(*shape)

        cases = [("stsep LIF", _forward_backward(LIF(), x, grad))]
        if include_phases:
            cases.append(("stsep LIF (phases)", _forward_backward(LIF(fused=False), x, grad)))
        cases.append(("stsep NSN", _forward_backward(NonStatefulNeuron(), x, grad)))
        if reference is not None:
            node, reset = reference
            cases.append(("spikingjelly LIFNode", _forward_backward(node, x, grad, reset)))
        cases.append(("memory floor", _memory_floor(x.detach(), grad)))

        timings = time_interleaved(dict(cases), repeats=repeats, iterations=iterations)
        shape_rows = [
            {
                "shape": "x".join(map(str, shape)),
                "implementation": name,
                **timing,
                "threads": torch.get_num_threads(),
            }
            for name, timing in timings.items()
        ]
        medians = {row["implementation"]: row["median_ms"] for row in shape_rows}
        minima = {row["implementation"]: row["min_ms"] for row in shape_rows}
        cpu = {row["implementation"]: row["cpu_ms"] for row in shape_rows}
        for row in shape_rows:
            if "spikingjelly LIFNode" in medians:
                row["vs_spikingjelly"] = medians["spikingjelly LIFNode"] / row["median_ms"]
                row["vs_spikingjelly_min"] = minima["spikingjelly LIFNode"] / row["min_ms"]
                row["vs_spikingjelly_cpu"] = cpu["spikingjelly LIFNode"] / row["cpu_ms"]
            row["vs_floor"] = row["median_ms"] / medians["memory floor"]
        rows.extend(shape_rows)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark LIF and NSN forward and backward passes.")
    parser.add_argument("--quick", action="store_true", help="one shape, fewer iterations")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    rows = run(
        shapes=QUICK_SHAPES if args.quick else DEFAULT_SHAPES,
        repeats=args.repeats,
        iterations=3 if args.quick else 10,
    )
    print(
        format_rows(
            rows,
            ["shape", "implementation", "median_ms", "min_ms", "cpu_ms", "vs_spikingjelly",
             "vs_spikingjelly_min", "vs_spikingjelly_cpu", "vs_floor", "threads"],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
