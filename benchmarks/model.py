"""Benchmark a training step per model variant against SpikingJelly's SEW-ResNet-18.

Times one SGD step (forward, cross-entropy, backward, update) on a batch of
clips ``[B, T, 3, H, W]`` at depth 18. The variants are ``vanilla``, ``ns4``,
``rns2``, ``stsep-s1234-state`` and ``stsep-s1234-nostate``, and the reference
is SpikingJelly 2.0's ``sew_resnet18(cnf="ADD", spiking_neuron=LIFNode)`` in
multi-step mode (the same network as ``vanilla``: tau 2, ATan, detached
reset). Step times are measured in one process with the configurations
interleaved. Peak resident memory (``VmHWM``) is measured with one process
per configuration. A second table shows the peak memory of
``vanilla`` against the number of time steps T.

Importing SpikingJelly's model package needs two modules that are not
installed here: ``torchvision`` (for ``load_state_dict_from_url``, used only
to download pretrained weights) and ``h5py`` (imported by its distributed
inference helpers). :func:`install_spikingjelly_stand_ins` registers
stand-in modules for both: ``torchvision.models.utils.load_state_dict_from_url``
is ``torch.hub.load_state_dict_from_url``, and ``h5py`` is an empty module
that no benchmarked code path uses.

Usage: ``python benchmarks/model.py [--quick]``. :func:`run` returns the rows.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import (
    current_rss_mb,
    format_rows,
    peak_rss_mb,
    run_in_subprocess,
    time_call,
    time_interleaved,
)

__all__ = ["DEFAULT_VARIANTS", "install_spikingjelly_stand_ins", "measure_memory", "run"]

logger = logging.getLogger(__name__)

DEFAULT_VARIANTS: tuple[str, ...] = (
    "vanilla",
    "ns4",
    "rns2",
    "stsep-s1234-state",
    "stsep-s1234-nostate",
    "spikingjelly",
)
NUM_CLASSES = 101


def install_spikingjelly_stand_ins() -> None:
    """Register stand-in ``torchvision`` and ``h5py`` modules unless the real ones import."""
    import torch.hub

    try:
        import torchvision  # noqa: F401
    except ImportError:
        torchvision_module = types.ModuleType("torchvision")
        models_module = types.ModuleType("torchvision.models")
        utils_module = types.ModuleType("torchvision.models.utils")
        utils_module.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        torchvision_module.models = models_module
        models_module.utils = utils_module
        sys.modules.update(
            {
                "torchvision": torchvision_module,
                "torchvision.models": models_module,
                "torchvision.models.utils": utils_module,
            }
        )
    try:
        import h5py  # noqa: F401
    except ImportError:
        sys.modules["h5py"] = types.ModuleType("h5py")


def _build(variant: str, *, num_frames: int):
    """Return (model, clips-to-logits function) for one configuration."""
    import torch

    if variant == "spikingjelly":
        install_spikingjelly_stand_ins()
        from spikingjelly.activation_based import functional, neuron, surrogate
        from spikingjelly.activation_based.model import sew_resnet

        model = sew_resnet.sew_resnet18(
            cnf="ADD",
            spiking_neuron=neuron.LIFNode,
            surrogate_function=surrogate.ATan(),
            detach_reset=True,
            num_classes=NUM_CLASSES,
        )
        functional.set_step_mode(model, "m")

        def logits(clips: torch.Tensor) -> torch.Tensor:
            functional.reset_net(model)
            return model(clips.transpose(0, 1).contiguous()).mean(dim=0)  # [T, B, K] -> [B, K]

        return model, logits

    from stsep import build_model

    model = build_model(variant, num_classes=NUM_CLASSES, depth=18)
    return model, model


def _make_step(variant: str, *, num_frames: int, batch: int, size: int):
    """Return (one SGD step as a function, number of parameters) for one configuration."""
    import torch

    torch.manual_seed(0)
    model, logits_of = _build(variant, num_frames=num_frames)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clips = torch.randn(batch, num_frames, 3, size, size)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(logits_of(clips), labels).backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def measure_memory(config: dict[str, Any]) -> dict[str, Any]:
    """Run two SGD steps of one configuration and report memory (run in a child process).

    Args:
        config: ``variant``, ``num_frames``, ``batch``, ``size``.

    Returns:
        The config plus ``peak_rss_mb``, ``baseline_rss_mb`` (after imports,
        before the model), ``model_rss_mb`` (their difference), ``params``
        and ``step_ms`` (the second step's wall time).
    """
    import torch

    baseline = current_rss_mb()
    step, params = _make_step(
        config["variant"], num_frames=config["num_frames"], batch=config["batch"], size=config["size"]
    )
    step()  # the first step also allocates gradients and momentum buffers
    timing = time_call(step, repeats=1, iterations=1, warmup=0)
    peak = peak_rss_mb()
    return {
        **config,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "model_rss_mb": peak - baseline,
        "params": params,
        "step_ms": timing["median_ms"],
        "threads": torch.get_num_threads(),
    }


def run(
    *,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    num_frames: int = 8,
    batch: int = 2,
    size: int = 112,
    repeats: int = 3,
    steps: int = 2,
    memory_frames: Sequence[int] = (4, 8, 16),
) -> dict[str, list[dict[str, Any]]]:
    """Time every variant in this process, then measure memory in child processes.

    Timing builds all models first and interleaves their steps (one repeat
    of each per round), so all see the same background load. Memory needs
    one process per configuration, because the resident memory is a peak.

    Returns:
        ``{"steps": one row per variant, "memory": rows of vanilla per T}``.
        Step rows carry ``median_ms``, ``min_ms``, ``cpu_ms`` per step,
        ``vs_spikingjelly`` (SpikingJelly's median over this one's, so > 1
        is faster), ``vs_spikingjelly_min`` and ``vs_spikingjelly_cpu`` (the
        same for minima and CPU time) and the memory of the same
        configuration (``peak_rss_mb``, ``model_rss_mb``).
    """
    import torch

    shape = {"num_frames": num_frames, "batch": batch, "size": size}
    memories = {}
    for variant in variants:
        logger.info("memory of %s", variant)
        memories[variant] = run_in_subprocess("benchmarks.model", "measure_memory", {"variant": variant, **shape})

    cases = {}
    params = {}
    for variant in variants:
        cases[variant], params[variant] = _make_step(variant, **shape)
    logger.info("timing %s (T = %d, batch %d, %d x %d)", ", ".join(variants), num_frames, batch, size, size)
    timings = time_interleaved(cases, repeats=repeats, iterations=steps)

    step_rows = []
    for variant in variants:
        memory = memories[variant]
        step_rows.append(
            {
                "variant": variant,
                **shape,
                **timings[variant],
                "peak_rss_mb": memory["peak_rss_mb"],
                "model_rss_mb": memory["model_rss_mb"],
                "params": params[variant],
                "threads": torch.get_num_threads(),
            }
        )
    if "spikingjelly" in timings:
        for row in step_rows:
            row["vs_spikingjelly"] = timings["spikingjelly"]["median_ms"] / row["median_ms"]
            row["vs_spikingjelly_min"] = timings["spikingjelly"]["min_ms"] / row["min_ms"]
            row["vs_spikingjelly_cpu"] = timings["spikingjelly"]["cpu_ms"] / row["cpu_ms"]

    memory_rows = []
    for frames in memory_frames:
        logger.info("memory of vanilla at T = %d", frames)
        memory_rows.append(
            run_in_subprocess(
                "benchmarks.model",
                "measure_memory",
                {"variant": "vanilla", "num_frames": frames, "batch": batch, "size": size},
            )
        )
    return {"steps": step_rows, "memory": memory_rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark one SGD step per model variant.")
    parser.add_argument(
        "--quick", action="store_true", help="T = 4, 64 x 64, one step per repeat, memory at T = 2 and 4"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads in every process (default: torch's)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        # Child processes read the variable when torch starts.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)

    if args.quick:
        results = run(num_frames=4, size=64, repeats=3, steps=1, memory_frames=(2, 4))
    else:
        results = run()
    print(
        format_rows(
            results["steps"],
            ["variant", "num_frames", "batch", "size", "median_ms", "min_ms", "cpu_ms", "vs_spikingjelly",
             "vs_spikingjelly_min", "vs_spikingjelly_cpu", "peak_rss_mb", "model_rss_mb", "params"],
        )
    )
    print()
    print(format_rows(results["memory"], ["variant", "num_frames", "step_ms", "peak_rss_mb", "model_rss_mb"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
