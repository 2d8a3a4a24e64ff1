"""Per-frame activation maps of a stage, overlaid on the input frames.

For a clip, the output of a stage `[T, B, C, h, w]` is averaged over
channels, giving one map per time step. For a plain stage the output is the
SEW sum of spikes, so the map is a spike rate. An STSep stage also adds
`lambda` times its analog temporal branch, so its map is a mean output that
can dip below zero. The maps are upsampled bilinearly to the frame size and
drawn over the frames, one row per model, so two runs (for example `vanilla`
and an STSep variant) can be compared frame by frame.

An STSep block's temporal branch outputs BN activations, not spikes, computed
from the frame difference `D[t] = X[t] - X[t-1]` of its input spikes. Its map
is the mean absolute departure, over channels, of the branch output from the
output the same branch gives for an all-zero difference (no change at all).
It is therefore exactly zero at t = 0 and wherever the block's input spikes
did not change, whatever the trained BN offsets are. Where it is bright, the
block responds to change between time steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

__all__ = [
    "ActivationMaps",
    "compute_activation_maps",
    "plot_activation_maps",
    "save_activation_maps",
    "stage_spike_rate_map",
    "temporal_branch_map",
]

logger = logging.getLogger(__name__)

NUM_STAGES = 4
# Opacity of the map over the frame: enough to read both.
OVERLAY_ALPHA = 0.5


def _check_stage(stage: int) -> None:
    if stage not in range(1, NUM_STAGES + 1):
        raise ValueError(f"stage must be in 1..{NUM_STAGES}, got {stage!r}")


@torch.no_grad()
def stage_spike_rate_map(model: nn.Module, clip_input: torch.Tensor, *, stage: int) -> torch.Tensor:
    """Return the channel-mean output of `stage` for one clip.

    Args:
        model: a `stsep.models.SpikingResNet`.
        clip_input: float model input `[1, T, 3, H, W]`.
        stage: 1..4.

    Returns:
        `[T, h, w]` at the stage's resolution.
    """
    from stsep.profile import record_stage_outputs

    _check_stage(stage)
    if clip_input.ndim != 5 or clip_input.shape[0] != 1:
        raise ValueError(f"clip_input must be one clip [1, T, 3, H, W], got shape {tuple(clip_input.shape)}")
    model.eval()
    with record_stage_outputs(model, stages=(stage,)) as recorder:
        model(clip_input)
    output = recorder.outputs[f"stage{stage}"]  # [T, 1, C, h, w]
    return output[:, 0].float().mean(dim=1)  # [T, h, w]


@torch.no_grad()
def temporal_branch_map(model: nn.Module, clip_input: torch.Tensor, *, stage: int) -> torch.Tensor | None:
    """Return the change-driven temporal-branch response of the last STSep block in `stage`.

    The response is `mean_c |temporal(X) - temporal(0)|`, where `temporal(0)`
    is the branch run on an all-zero input of the same shape.

    Args:
        model: a `stsep.models.SpikingResNet`.
        clip_input: float model input `[1, T, 3, H, W]`.
        stage: 1..4.

    Returns:
        `[T, h, w]`, or None when `stage` has no STSep block in this model.
    """
    _check_stage(stage)
    branches = [block.temporal for block in model.stages[stage - 1] if hasattr(block, "temporal")]
    if not branches:
        return None
    # The last block is the one nearest the stage output.
    branch = branches[-1]
    captured: dict[str, object] = {}

    def hook(_module, args, kwargs, output):
        captured.update(x=args[0], kwargs=dict(kwargs), output=output)

    model.eval()
    handle = branch.register_forward_hook(hook, with_kwargs=True)
    try:
        model(clip_input)
    finally:
        handle.remove()
    baseline = branch(torch.zeros_like(captured["x"]), **captured["kwargs"])  # [T, 1, C, h, w]
    return (captured["output"] - baseline)[:, 0].float().abs().mean(dim=1)  # -> [T, h, w]


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Resize `[T, h, w]` maps to `[T, H, W]` bilinearly."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


@dataclass(frozen=True)
class ActivationMaps:
    """Frames of one clip and the activation maps drawn over them.

    Attributes:
        video_id: the video the clip came from.
        frames: uint8 `[T, H, W, 3]`.
        maps: row title -> float `[T, H, W]` at frame resolution.
        kinds: row title -> "spikes" (stage output) or "temporal" (temporal-branch response).
    """

    video_id: str
    frames: np.ndarray
    maps: dict[str, np.ndarray]
    kinds: dict[str, str]


def compute_activation_maps(
    models: Mapping[str, nn.Module],
    clip: np.ndarray,
    *,
    stage: int,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    video_id: str,
    temporal: bool = True,
) -> ActivationMaps:
    """Compute the stage maps of each model, and the temporal-branch maps where a model has one.

    Args:
        models: label (such as a variant name) -> model, in display order.
        clip: uint8 `[T, H, W, 3]`.
        stage: the stage whose output is shown, 1..4.
        to_input: converts uint8 `[B, T, H, W, 3]` to model input `[B, T, 3, H, W]`.
        video_id: shown in the figure title.
        temporal: also show STSep temporal branches of `stage`.
    """
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"clip must be uint8 [T, H, W, 3], got shape {clip.shape}")
    size = tuple(clip.shape[1:3])
    maps: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for label, model in models.items():
        device = next(model.parameters()).device
        clip_input = to_input(torch.as_tensor(clip)[None].to(device))  # [1, T, 3, H, W]
        # An STSep stage adds the analog temporal branch to its spikes, so its output is no spike rate.
        is_stsep_stage = any(hasattr(block, "temporal") for block in model.stages[stage - 1])
        title = f"{label}: stage {stage} {'mean output' if is_stsep_stage else 'spike rate'}"
        maps[title] = _upsample(stage_spike_rate_map(model, clip_input, stage=stage).cpu(), size)
        kinds[title] = "spikes"
        if temporal:
            branch = temporal_branch_map(model, clip_input, stage=stage)
            if branch is not None:
                title = f"{label}: stage {stage} temporal branch"
                maps[title] = _upsample(branch.cpu(), size)
                kinds[title] = "temporal"
    return ActivationMaps(video_id=video_id, frames=clip, maps=maps, kinds=kinds)


def _color_range(rows: list[np.ndarray]) -> tuple[float, float]:
    """Return a colour range that spans the values and 0, never empty."""
    low = min([0.0, *(float(values.min()) for values in rows)])
    high = max([0.0, *(float(values.max()) for values in rows)])
    return low, high if high > low else low + 1.0


def plot_activation_maps(maps: ActivationMaps) -> Figure:
    """Draw the frames (top row) and each map over them (one row per map, one column per time step).

    Stage rows share one colour scale, so the two models compare directly.
    Each temporal-branch row is scaled to its own maximum.
    """
    num_steps = maps.frames.shape[0]
    rows = 1 + len(maps.maps)
    figure = Figure(figsize=(1.6 * num_steps + 1.0, 1.9 * rows + 0.4))
    grid = figure.subplots(rows, num_steps, squeeze=False)
    spike_rows = [values for title, values in maps.maps.items() if maps.kinds[title] == "spikes"]
    spike_range = _color_range(spike_rows)

    for step in range(num_steps):
        grid[0, step].imshow(maps.frames[step])
        grid[0, step].set_title(f"t = {step}", fontsize="small")
    grid[0, 0].set_ylabel("frames", fontsize="small")
    for row, (title, values) in enumerate(maps.maps.items(), start=1):
        vmin, vmax = spike_range if maps.kinds[title] == "spikes" else _color_range([values])
        for step in range(num_steps):
            grid[row, step].imshow(maps.frames[step])
            image = grid[row, step].imshow(values[step], cmap="inferno", alpha=OVERLAY_ALPHA, vmin=vmin, vmax=vmax)
        # The row title sits above the row's first frame, because a y-label is too narrow for it.
        grid[row, 0].annotate(
            title, xy=(0.0, 1.04), xycoords="axes fraction", ha="left", va="bottom", fontsize="small"
        )
        figure.colorbar(image, ax=list(grid[row]), fraction=0.02, pad=0.01)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"video {maps.video_id}", fontsize="small")
    return figure


def save_activation_maps(maps: ActivationMaps, path: Path) -> Path:
    """Write the figure of `maps` as a PNG and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = plot_activation_maps(maps)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    figure.clear()
    logger.info("wrote activation maps of video %s to %s", maps.video_id, path)
    return path
