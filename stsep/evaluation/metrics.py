"""Classification metrics and multi-view aggregation for video evaluation.

Multi-view testing (several temporal clips and spatial crops per video) follows
the common protocol of video recognition papers: the logits of every view of a
video are averaged, and the class with the largest mean logit is the
prediction. Averaging softmax probabilities instead is an option.

Everything here works on CPU tensors and NumPy arrays; nothing depends on a
model, so the functions are reused by the retrieval and report code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "VIEW_AGGREGATIONS",
    "ClassificationResult",
    "ViewSpec",
    "aggregate_views",
    "classification_result",
    "confusion_matrix",
    "parse_views",
    "per_class_accuracy",
    "topk_accuracy",
]

logger = logging.getLogger(__name__)

VIEW_AGGREGATIONS = ("logits", "softmax")


@dataclass(frozen=True)
class ViewSpec:
    """Number of temporal clips and spatial crops per video in evaluation."""

    num_clips: int
    num_crops: int

    def __post_init__(self) -> None:
        if self.num_clips < 1 or self.num_crops < 1:
            raise ValueError(
                f"views must be at least 1x1, got {self.num_clips}x{self.num_crops}; "
                "pass clips x crops such as 1x1 or 4x3"
            )

    @property
    def num_views(self) -> int:
        """Views per video: clips times crops."""
        return self.num_clips * self.num_crops

    @property
    def label(self) -> str:
        """The `<clips>x<crops>` form used in metric names, such as `4x3`."""
        return f"{self.num_clips}x{self.num_crops}"


def parse_views(text: str) -> ViewSpec:
    """Parse a `<clips>x<crops>` string such as `1x1` or `4x3`.

    Raises:
        ValueError: if `text` is not two positive integers joined by `x`.
    """
    parts = text.strip().lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"invalid views {text!r}: expected <clips>x<crops> with positive integers, such as 1x1 or 4x3")
    return ViewSpec(num_clips=int(parts[0]), num_crops=int(parts[1]))


def aggregate_views(
    logits: torch.Tensor,
    video_ids: Sequence[str],
    labels: Sequence[int] | torch.Tensor,
    *,
    mode: str = "logits",
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Average the per-view scores of each video.

    Args:
        logits: per-view logits, `[N_views, num_classes]`.
        video_ids: the video of each view, length `N_views`.
        labels: the label of each view, length `N_views`. Every view of a video
            must carry the same label.
        mode: `"logits"` averages raw logits, and `"softmax"` averages softmax
            probabilities.

    Returns:
        `(video_ids, scores, labels)`: unique video ids in first-seen order, the
        averaged scores `[N_videos, num_classes]` and labels `[N_videos]`.

    Raises:
        ValueError: for an unknown mode, mismatched lengths or a video whose
            views disagree on the label.
    """
    if mode not in VIEW_AGGREGATIONS:
        raise ValueError(f"unknown view aggregation {mode!r}; choose one of {', '.join(VIEW_AGGREGATIONS)}")
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N_views, num_classes], got shape {tuple(logits.shape)}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(video_ids) != logits.shape[0] or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"got {logits.shape[0]} logit rows, {len(video_ids)} video ids and {labels.shape[0]} labels; "
            "each view needs one of each"
        )

    scores = logits.float()
    if mode == "softmax":
        scores = scores.softmax(dim=1)

    order: dict[str, int] = {}
    for video_id in video_ids:
        order.setdefault(str(video_id), len(order))
    index = torch.tensor([order[str(video_id)] for video_id in video_ids], dtype=torch.long)

    # Sum the views of each video into its row, then divide by the view count.
    sums = torch.zeros(len(order), scores.shape[1], dtype=scores.dtype).index_add_(0, index, scores)
    counts = torch.bincount(index, minlength=len(order)).to(scores.dtype)
    video_scores = sums / counts[:, None]

    video_labels = torch.full((len(order),), -1, dtype=torch.long)
    video_labels[index] = labels
    mismatched = labels != video_labels[index]
    if mismatched.any():
        bad = str(video_ids[int(mismatched.nonzero()[0])])
        raise ValueError(f"views of video {bad!r} carry different labels; the manifest must give one label per video")
    return list(order), video_scores, video_labels


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, *, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose label is among the `k` highest scores.

    Args:
        scores: `[N, num_classes]`.
        labels: `[N]` class indices.
        ks: the k values. A k above `num_classes` counts every sample as a hit.

    Returns:
        `{k: accuracy}` with accuracies in [0, 1].
    """
    if scores.shape[0] == 0:
        raise ValueError("cannot compute accuracy over zero samples; check that the split is not empty")
    labels = torch.as_tensor(labels, dtype=torch.long)
    # A stable sort ranks tied scores by class index, so results are reproducible.
    ranked = scores.sort(dim=1, descending=True, stable=True).indices
    hits = ranked == labels[:, None]
    return {int(k): float(hits[:, : min(int(k), scores.shape[1])].any(dim=1).float().mean()) for k in ks}


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, *, num_classes: int) -> np.ndarray:
    """Count matrix `[num_classes, num_classes]`: rows are true classes, columns predictions."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    predictions = torch.as_tensor(predictions, dtype=torch.long)
    flat = labels * num_classes + predictions
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy()


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix, NaN for a class with no samples."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


@dataclass(frozen=True)
class ClassificationResult:
    """Video-level results of one evaluation.

    Attributes:
        top1: top-1 accuracy in [0, 1].
        top5: top-5 accuracy in [0, 1].
        num_videos: videos evaluated.
        confusion: counts `[num_classes, num_classes]`, rows are true classes.
        class_accuracy: recall per class, NaN for a class without videos.
        video_ids: one per video, in the order of the arrays below.
        predictions: predicted class per video `[N_videos]`.
        labels: true class per video `[N_videos]`.
        scores: the aggregated view scores `[N_videos, num_classes]`.
    """

    top1: float
    top5: float
    num_videos: int
    confusion: np.ndarray
    class_accuracy: np.ndarray
    video_ids: tuple[str, ...]
    predictions: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def classification_result(
    scores: torch.Tensor, labels: torch.Tensor, video_ids: Sequence[str], *, num_classes: int
) -> ClassificationResult:
    """Compute top-1, top-5, the confusion matrix and per-class accuracy.

    Args:
        scores: video-level scores `[N_videos, num_classes]`.
        labels: `[N_videos]`.
        video_ids: length `N_videos`.
        num_classes: classes of the model's head.
    """
    if scores.shape[1] != num_classes:
        raise ValueError(f"scores have {scores.shape[1]} classes but num_classes is {num_classes}")
    accuracy = topk_accuracy(scores, labels, ks=(1, 5))
    predictions = scores.argmax(dim=1)
    matrix = confusion_matrix(predictions, labels, num_classes=num_classes)
    return ClassificationResult(
        top1=accuracy[1],
        top5=accuracy[5],
        num_videos=int(scores.shape[0]),
        confusion=matrix,
        class_accuracy=per_class_accuracy(matrix),
        video_ids=tuple(str(video_id) for video_id in video_ids),
        predictions=predictions.numpy(),
        labels=torch.as_tensor(labels).numpy(),
        scores=scores.detach().float().numpy(),
    )
