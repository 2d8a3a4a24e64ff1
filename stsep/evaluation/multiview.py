"""Multi-view evaluation of a video classifier.

A video is tested on `num_clips x num_crops` views (temporal clips at segment
centres times spatial crops). The model scores each view on its own, then the
per-view logits of a video are averaged (or, as an option, their softmax
probabilities). The video-level scores give top-1, top-5, the confusion matrix
and per-class accuracy. With `1x1` views the result is single-view
accuracy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stsep.evaluation.batches import clips_tensor
from stsep.evaluation.metrics import ClassificationResult, aggregate_views, classification_result
from stsep.evaluation.retrieval import pool_features

__all__ = ["ViewLogits", "collect_view_logits", "evaluate_multiview"]

logger = logging.getLogger(__name__)

# Progress is logged every this many batches, so long test sets show movement.
LOG_EVERY_BATCHES = 20


@dataclass(frozen=True)
class ViewLogits:
    """Per-view model outputs before aggregation.

    Attributes:
        logits: `[N_views, num_classes]` on the CPU.
        labels: `[N_views]`.
        video_ids: length `N_views`.
        views: the view index of each row within its video, length `N_views`.
        features: time-pooled, L2-normalized features `[N_views, D]` for
            retrieval, or None when they were not requested.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    video_ids: tuple[str, ...]
    views: tuple[int, ...]
    features: torch.Tensor | None = None


@torch.no_grad()
def collect_view_logits(
    model: nn.Module,
    batches: Iterable[Mapping[str, object]],
    *,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device | str = "cpu",
    with_features: bool = False,
) -> ViewLogits:
    """Score every view in `batches` with `model`.

    Args:
        model: a classifier taking `[B, T, 3, H, W]` and returning `[B, num_classes]`.
        batches: mappings with `"clip"` uint8 `[B, T, H, W, 3]`, `"label"` `[B]`,
            `"video_id"` (length B) and optionally `"view"` `[B]`, as produced by
            `ray.data.Dataset.iter_batches(batch_format="numpy")` over the
            evaluation clip dataset.
        to_input: converts a uint8 clip batch to the float model input.
        device: where the model runs.
        with_features: also keep each view's time-pooled features. The logits
            are then computed as `forward_head(forward_features(x))`, which is
            what `model(x)` computes, so one pass gives both.
    """
    model.eval()
    logits: list[torch.Tensor] = []
    features: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    video_ids: list[str] = []
    views: list[int] = []
    start = time.perf_counter()
    num_clips = 0
    for batch_index, batch in enumerate(batches):
        clips = clips_tensor(batch["clip"]).to(device)
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"clip batches must be uint8 [B, T, H, W, 3], got shape {tuple(clips.shape)}")
        if with_features:
            view_features = model.forward_features(to_input(clips))  # [T, B, D]
            logits.append(model.forward_head(view_features).float().cpu())
            features.append(pool_features(view_features).cpu())
        else:
            logits.append(model(to_input(clips)).float().cpu())
        labels.append(torch.from_numpy(np.array(batch["label"], dtype=np.int64)))
        video_ids.extend(str(video_id) for video_id in batch["video_id"])
        batch_views = batch.get("view")
        views.extend(int(view) for view in (batch_views if batch_views is not None else [0] * clips.shape[0]))
        num_clips += clips.shape[0]
        if (batch_index + 1) % LOG_EVERY_BATCHES == 0:
            logger.info("scored %d views, %.1f clips per second", num_clips, num_clips / (time.perf_counter() - start))
    if not logits:
        raise ValueError("the evaluation split produced no clips; check the manifest's split column")
    return ViewLogits(
        logits=torch.cat(logits),
        labels=torch.cat(labels),
        video_ids=tuple(video_ids),
        views=tuple(views),
        features=torch.cat(features) if with_features else None,
    )


def evaluate_multiview(
    view_logits: ViewLogits, *, num_classes: int, aggregation: str = "logits", expected_views: int | None = None
) -> ClassificationResult:
    """Aggregate per-view logits per video and compute the classification metrics.

    Args:
        view_logits: the output of `collect_view_logits`.
        num_classes: classes of the model's head.
        aggregation: `"logits"` (mean of logits) or `"softmax"` (mean of probabilities).
        expected_views: views each video should have; a video with fewer (a
            clip that failed to decode) is logged as a warning and kept.
    """
    video_ids, scores, labels = aggregate_views(
        view_logits.logits, view_logits.video_ids, view_logits.labels, mode=aggregation
    )
    if expected_views is not None:
        counts: dict[str, int] = {}
        for video_id in view_logits.video_ids:
            counts[video_id] = counts.get(video_id, 0) + 1
        short = [video_id for video_id, count in counts.items() if count != expected_views]
        if short:
            logger.warning(
                "%d of %d videos have a view count other than %d (first: %s with %d)",
                len(short), len(counts), expected_views, short[0], counts[short[0]],
            )
    return classification_result(scores, labels, video_ids, num_classes=num_classes)
