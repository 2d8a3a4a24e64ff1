"""Firing rates, stage outputs, operation counts and energy estimates of a model.

- :func:`record_firing_rates`: mean spike rate of the neurons of the stem and
  each stage while a ``with`` block runs. Hooks exist only inside the block.
- :func:`record_stage_outputs`: each stage's output (and optionally each STSep
  block's temporal branch output) as ``[T, B, C, H, W]`` for activation maps.
- :func:`count_operations`: parameters, multiply-accumulates (MACs) of layers
  with analog input and synaptic operations (SOPs) of layers with spike input.
- :func:`estimate_energy_mj`: energy of those operations with 45 nm CMOS
  figures.
- :func:`summarize_variants` and ``python -m stsep.profile``: a table of
  parameters, operations and energy per model variant.

The energy model is the one commonly used for SNNs, for instance in Dong, Yu,
Ding, Xu, Huang 2025, "Unleashing Temporal Capacity of Spiking Neural Networks
through Spatiotemporal Separation". A layer whose input is a real value costs
one MAC per connection. A layer whose input is a spike costs one accumulate
(AC) per connection per spike, so its SOPs are its MACs times the firing rate
of its input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import torch
from torch import nn

from stsep.neurons import SpikingNeuron
from stsep.variants import DEFAULT_VARIANTS

__all__ = [
    "DEFAULT_FIRING_RATE",
    "E_AC_PJ",
    "E_MAC_PJ",
    "FiringRateRecorder",
    "StageOutputRecorder",
    "count_operations",
    "estimate_energy",
    "estimate_energy_mj",
    "format_table",
    "record_firing_rates",
    "record_stage_outputs",
    "summarize_variants",
]

logger = logging.getLogger(__name__)

# Energy per 32-bit floating-point operation in 45 nm CMOS, from M. Horowitz,
# "Computing's energy problem (and what we can do about it)", ISSCC 2014:
# a multiply (3.7 pJ) plus an add (0.9 pJ) for a MAC, an add alone for an AC.
E_MAC_PJ: Final[float] = 4.6
E_AC_PJ: Final[float] = 0.9

# NOTE: an assumption, not a measurement: the input firing rate used for every
# spiking layer when count_operations gets no measured rates. Pass the rates
# from record_firing_rates for numbers that describe a trained model.
DEFAULT_FIRING_RATE: Final[float] = 0.2

GROUPS: Final[tuple[str, ...]] = ("stem", "stage1", "stage2", "stage3", "stage4")

_STAGE_NAME = re.compile(r"stages\.(\d+)\.(\d+)\.(.+)")


def _group_of(module_name: str) -> str | None:
    """Return ``stem``, ``stage1`` .. ``stage4`` for a submodule name, else None."""
    if module_name == "stem" or module_name.startswith("stem."):
        return "stem"
    match = re.match(r"stages\.(\d+)(\.|$)", module_name)
    if match:
        return f"stage{int(match.group(1)) + 1}"
    return None


class FiringRateRecorder:
    """Spike counts per neuron group, accumulated by :func:`record_firing_rates`."""

    def __init__(self) -> None:
        self._spikes: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._layer_spikes: dict[str, torch.Tensor] = {}
        self._layer_counts: dict[str, int] = {}

    def _add(self, group: str, layer: str, spikes: torch.Tensor) -> None:
        total = spikes.detach().sum(dtype=torch.float64)
        for store, counts, key in (
            (self._spikes, self._counts, group),
            (self._layer_spikes, self._layer_counts, layer),
        ):
            store[key] = store[key] + total if key in store else total
            counts[key] = counts.get(key, 0) + spikes.numel()

    def rates(self) -> dict[str, float]:
        """Return the mean firing rate per group: stem, stage1 .. stage4.

        The rate is the number of spikes over the number of neuron time steps,
        summed over every call made while recording. Groups that saw no call
        are missing.
        """
        return {
            group: float(self._spikes[group]) / self._counts[group]
            for group in GROUPS
            if self._counts.get(group)
        }

    def layer_rates(self) -> dict[str, float]:
        """Return the mean firing rate of each neuron module, by module name."""
        return {
            name: float(total) / self._layer_counts[name]
            for name, total in self._layer_spikes.items()
        }


@contextlib.contextmanager
def record_firing_rates(model: nn.Module) -> Iterator[FiringRateRecorder]:
    """Record the firing rates of the neurons in the stem and each stage.

    Args:
        model: a :class:`stsep.models.SpikingResNet` (any module whose stem is
            ``stem`` and whose stages are ``stages.<i>`` works).

    Yields:
        A :class:`FiringRateRecorder`; call ``.rates()`` during or after the block.
    """
    recorder = FiringRateRecorder()
    handles = []
    for name, module in model.named_modules():
        group = _group_of(name)
        if group is None or not isinstance(module, SpikingNeuron):
            continue

        def hook(_module, _inputs, output, *, group=group, name=name):
            recorder._add(group, name, output)

        handles.append(module.register_forward_hook(hook))
    if not handles:
        logger.warning("record_firing_rates found no spiking neurons in stem or stages")
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


@dataclasses.dataclass
class StageOutputRecorder:
    """Outputs captured by :func:`record_stage_outputs`, keyed by name.

    Keys: ``stage<i>`` for stage outputs and ``stage<i>.block<j>.temporal`` for
    STSep temporal branch outputs; each value is the detached tensor
    ``[T, B, C, H, W]`` of the latest forward call.
    """

    outputs: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


@contextlib.contextmanager
def record_stage_outputs(
    model: nn.Module,
    stages: Sequence[int] = (1, 2, 3, 4),
    temporal: bool = False,
) -> Iterator[StageOutputRecorder]:
    """Capture stage outputs (and STSep temporal branch outputs) during a ``with`` block.

    Args:
        model: a :class:`stsep.models.SpikingResNet`.
        stages: stage numbers (1..4) whose outputs are captured.
        temporal: also capture the ``temporal`` submodule of each block in
            those stages that has one (STSep blocks).

    Yields:
        A :class:`StageOutputRecorder` whose ``outputs`` fill during forward calls.

    Raises:
        ValueError: if a stage number is not in 1..4.
    """
    invalid = [stage for stage in stages if stage not in (1, 2, 3, 4)]
    if invalid:
        raise ValueError(f"stages must be numbers in 1..4, got {list(stages)!r}")
    recorder = StageOutputRecorder()
    handles = []

    def capture(key: str):
        def hook(_module, _inputs, output):
            recorder.outputs[key] = output.detach()

        return hook

    for stage in stages:
        stage_module = model.stages[stage - 1]
        handles.append(stage_module.register_forward_hook(capture(f"stage{stage}")))
        if temporal:
            for index, block in enumerate(stage_module):
                branch = getattr(block, "temporal", None)
                if branch is not None:
                    key = f"stage{stage}.block{index}.temporal"
                    handles.append(branch.register_forward_hook(capture(key)))
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


def _input_group(layer_name: str) -> str:
    """Return the neuron group whose spikes feed the named conv/linear layer."""
    if layer_name.startswith("fc"):
        return "stage4"
    match = _STAGE_NAME.fullmatch(layer_name)
    if not match:
        return "stem"
    stage, block, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    # The first block's first convolution and shortcut read the previous stage.
    reads_block_input = rest.startswith(
        ("conv_bn1.", "spatial.conv_bn1.", "downsample.", "temporal.reduce.")
    )
    if block == 0 and reads_block_input:
        return GROUPS[stage]  # GROUPS[0] is the stem, GROUPS[i] stage i
    return GROUPS[stage + 1]


def _has_analog_input(layer_name: str) -> bool:
    """Whether a layer's input is real-valued (frames, frame differences, pooled features)."""
    return (
        layer_name.startswith("stem.")
        or layer_name == "fc"
        or ".temporal.reduce." in f".{layer_name}"
    )


def count_operations(
    model: nn.Module,
    *,
    num_frames: int,
    height: int,
    width: int,
    firing_rates: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Count parameters, MACs and SOPs of one clip through the model.

    Runs one forward pass on a zero clip ``[1, num_frames, C, height, width]``
    in eval mode under ``torch.no_grad`` to find every convolution's and
    linear layer's output shape; the model's training mode is restored after.

    Layers with analog input count MACs: the stem convolution (frames), the
    1x1 convolution of each STSep temporal branch (average-pooled frame
    differences, not spikes) and the classifier (pooled features). Every other
    convolution counts SOPs = MACs x the firing rate of the neurons feeding it
    (the previous stage for a stage's first convolution and shortcut, else its
    own stage). NOTE: a SEW ADD output can be 2 where both summands spiked; it
    is counted as one spike. BN, pooling and neuron updates are not counted.

    Args:
        model: a :class:`stsep.models.SpikingResNet`.
        num_frames: time steps ``T`` per clip.
        height: frame height in pixels.
        width: frame width in pixels.
        firing_rates: mean rate per group (``stem``, ``stage1`` .. ``stage4``),
            e.g. from :func:`record_firing_rates`; missing groups and ``None``
            use :data:`DEFAULT_FIRING_RATE`.

    Returns:
        ``{"params", "macs", "sops", "dense_macs", "firing_rates", "layers",
        "num_frames", "height", "width"}`` for one clip; ``layers`` lists
        ``{"name", "kind" ("mac" or "sop"), "macs", "rate", "ops"}``.
    """
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    rates = {group: DEFAULT_FIRING_RATE for group in GROUPS}
    if firing_rates:
        unknown = sorted(set(firing_rates) - set(GROUPS))
        if unknown:
            raise ValueError(f"unknown firing-rate groups {unknown}; expected keys from {GROUPS}")
        rates.update({group: float(rate) for group, rate in firing_rates.items()})

    layer_macs: dict[str, int] = {}

    def hook_for(name: str, module: nn.Module):
        def hook(_module, _inputs, output):
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            else:
                fan_in = module.in_features
            layer_macs[name] = layer_macs.get(name, 0) + output.numel() * fan_in

        return hook

    handles = [
        module.register_forward_hook(hook_for(name, module))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    parameter = next(model.parameters())
    clip = torch.zeros(
        1, num_frames, model.in_channels, height, width, device=parameter.device, dtype=parameter.dtype
    )
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(clip)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    layers = []
    macs = sops = 0.0
    for name, count in layer_macs.items():
        if _has_analog_input(name):
            kind, rate, ops = "mac", 1.0, float(count)
            macs += ops
        else:
            kind, rate = "sop", rates[_input_group(name)]
            ops = count * rate
            sops += ops
        layers.append({"name": name, "kind": kind, "macs": count, "rate": rate, "ops": ops})

    return {
        "params": sum(p.numel() for p in model.parameters()),
        "macs": macs,
        "sops": sops,
        "dense_macs": float(sum(layer_macs.values())),
        "firing_rates": rates,
        "layers": layers,
        "num_frames": num_frames,
        "height": height,
        "width": width,
    }


def estimate_energy_mj(
    ops: dict[str, Any], *, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ
) -> float:
    """Return the estimated energy in millijoules of ``macs`` MACs and ``sops`` ACs.

    ``energy = macs * e_mac_pj + sops * e_ac_pj`` picojoules. The defaults are
    45 nm CMOS figures for 32-bit floating point from M. Horowitz, "Computing's
    energy problem (and what we can do about it)", ISSCC 2014: 4.6 pJ per
    multiply-accumulate (3.7 pJ multiply + 0.9 pJ add) and 0.9 pJ per add.

    Args:
        ops: a dict with ``macs`` and ``sops``, e.g. from :func:`count_operations`.
        e_mac_pj: energy of one MAC in picojoules.
        e_ac_pj: energy of one accumulate in picojoules.
    """
    missing = [key for key in ("macs", "sops") if key not in ops]
    if missing:
        raise ValueError(f"ops is missing {missing}; pass the result of count_operations")
    picojoules = ops["macs"] * e_mac_pj + ops["sops"] * e_ac_pj
    return picojoules * 1e-9


# The name the interface documents; the value is in millijoules.
estimate_energy = estimate_energy_mj


def summarize_variants(
    variants: Iterable[str] = DEFAULT_VARIANTS,
    *,
    depth: int = 18,
    num_frames: int = 8,
    height: int = 112,
    width: int = 112,
    num_classes: int = 101,
    firing_rates: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Return one row per variant: parameters, MACs, SOPs and energy for one clip.

    Operation counts use ``firing_rates`` (default :data:`DEFAULT_FIRING_RATE`
    for every group), not rates measured on data.
    """
    from stsep.models import build_model

    rows = []
    for variant in variants:
        model = build_model(variant, num_classes=num_classes, depth=depth)
        ops = count_operations(
            model, num_frames=num_frames, height=height, width=width, firing_rates=firing_rates
        )
        rows.append(
            {
                "variant": variant,
                "stage_map": model.variant.stage_map,
                "params_m": ops["params"] / 1e6,
                "macs_g": ops["macs"] / 1e9,
                "sops_g": ops["sops"] / 1e9,
                "dense_macs_g": ops["dense_macs"] / 1e9,
                "energy_mj": estimate_energy_mj(ops),
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Format rows of :func:`summarize_variants` as a Markdown table."""
    header = "| variant | stages | params (M) | MACs (G) | SOPs (G) | dense MACs (G) | energy (mJ) |"
    lines = [header, "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['stage_map']} | {row['params_m']:.2f} | "
            f"{row['macs_g']:.3f} | {row['sops_g']:.3f} | {row['dense_macs_g']:.3f} | "
            f"{row['energy_mj']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of :func:`summarize_variants` (``python -m stsep.profile``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help="variant names")
    parser.add_argument("--depth", type=int, default=18, help="ResNet depth (18 or 34)")
    parser.add_argument("--num-frames", type=int, default=8, help="time steps T per clip")
    parser.add_argument("--size", type=int, default=112, help="frame height and width in pixels")
    parser.add_argument("--num-classes", type=int, default=101, help="classifier outputs")
    parser.add_argument(
        "--firing-rate",
        type=float,
        default=DEFAULT_FIRING_RATE,
        help="assumed firing rate of every neuron group (spikes per neuron per time step)",
    )
    args = parser.parse_args(argv)
    rows = summarize_variants(
        args.variants,
        depth=args.depth,
        num_frames=args.num_frames,
        height=args.size,
        width=args.size,
        num_classes=args.num_classes,
        firing_rates={group: args.firing_rate for group in GROUPS},
    )
    sys.stdout.write(
        f"depth {args.depth}, T = {args.num_frames}, {args.size} x {args.size}, one clip, "
        f"assumed firing rate {args.firing_rate}\n{format_table(rows)}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
