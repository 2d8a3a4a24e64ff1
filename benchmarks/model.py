"""Benchmark a training step per model variant against SpikingJelly's SEW-ResNet-18.

One SGD step (forward, cross-entropy, backward, update) on a batch of clips
``[B, T, 3, H, W]`` at depth 18, for the variants ``vanilla``, ``ns4``,
``rns2``, ``stsep-s1234-state`` and ``stsep-s1234-nostate`` and for
SpikingJelly 2.0's ``sew_resnet18(cnf="ADD", spiking_neuron=LIFNode)`` in
multi-step mode (the same network as ``vanilla``: tau 2, ATan, detached
reset). Each configuration runs in its own Python process, which reports the
median step time and its peak resident memory (``ru_maxrss``). A second table
shows the peak memory of ``vanilla`` against the number of time steps T.

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
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import current_rss_mb, format_rows, peak_rss_mb, run_in_subprocess, time_call

__all__ = ["DEFAULT_VARIANTS", "install_spikingjelly_stand_ins", "measure_step", "run"]

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


def measure_step(config: dict[str, Any]) -> dict[str, Any]:
    """Time SGD training steps of one configuration (run in a child process).

    Args:
        config: ``variant``, ``num_frames``, ``batch``, ``size``, ``repeats``, ``steps``.

    Returns:
        The config plus ``median_ms``, ``min_ms``, ``cpu_ms`` (per step), ``peak_rss_mb``,
        ``baseline_rss_mb`` (after imports, before the model) and ``params``.
    """
    import torch

    baseline = current_rss_mb()
    torch.manual_seed(0)
    model, logits_of = _build(config["variant"], num_frames=config["num_frames"])
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clips = torch.randn(config["batch"], config["num_frames"], 3, config["size"], config["size"])
    labels = torch.randint(0, NUM_CLASSES, (config["batch"],))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(logits_of(clips), labels).backward()
        optimizer.step()

    step()  # warm-up: allocator, first-call overheads
    timing = time_call(step, repeats=config["repeats"], iterations=config["steps"], warmup=0)
    return {
        **config,
        "median_ms": timing["median_ms"],
        "min_ms": timing["min_ms"],
        "cpu_ms": timing["cpu_ms"],
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "params": sum(p.numel() for p in model.parameters()),
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
    """Run every configuration in its own process.

    Returns:
        ``{"steps": rows per variant, "memory": rows of vanilla per T}``. Step
        rows carry ``vs_spikingjelly`` (SpikingJelly's median over this one's;
        > 1 is faster); memory rows carry ``peak_rss_mb`` and
        ``model_rss_mb`` (peak minus the RSS after imports).
    """
    base = {"batch": batch, "size": size, "repeats": repeats, "steps": steps}
    step_rows = []
    for variant in variants:
        logger.info("timing %s (T = %d, batch %d, %d x %d)", variant, num_frames, batch, size, size)
        step_rows.append(
            run_in_subprocess(
                "benchmarks.model", "measure_step", {**base, "variant": variant, "num_frames": num_frames}
            )
        )
    reference = next((row for row in step_rows if row["variant"] == "spikingjelly"), None)
    for row in step_rows:
        row["model_rss_mb"] = row["peak_rss_mb"] - row["baseline_rss_mb"]
        if reference is not None:
            row["vs_spikingjelly"] = reference["median_ms"] / row["median_ms"]

    memory_rows = []
    for frames in memory_frames:
        logger.info("memory of vanilla at T = %d", frames)
        row = run_in_subprocess(
            "benchmarks.model",
            "measure_step",
            {**base, "repeats": 1, "steps": 1, "variant": "vanilla", "num_frames": frames},
        )
        row["model_rss_mb"] = row["peak_rss_mb"] - row["baseline_rss_mb"]
        memory_rows.append(row)
    return {"steps": step_rows, "memory": memory_rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark one SGD step per model variant.")
    parser.add_argument(
        "--quick", action="store_true", help="T = 4, 64 x 64, one repeat; memory at T = 2 and 4"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.quick:
        results = run(num_frames=4, size=64, repeats=1, steps=1, memory_frames=(2, 4))
    else:
        results = run()
    print(
        format_rows(
            results["steps"],
            ["variant", "num_frames", "batch", "size", "median_ms", "min_ms", "cpu_ms", "vs_spikingjelly",
             "peak_rss_mb", "model_rss_mb", "params"],
        )
    )
    print()
    print(format_rows(results["memory"], ["variant", "num_frames", "median_ms", "cpu_ms", "peak_rss_mb", "model_rss_mb"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
