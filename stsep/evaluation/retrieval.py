"""Video retrieval with features from the pooled last stage.

This is the retrieval protocol that Dong et al. 2025, "Unleashing Temporal
Capacity of Spiking Neural Networks through Spatiotemporal Separation", use
to compare variants. Each video is described by `model.forward_features`
averaged over time steps and L2 normalized. Every test video queries the
train videos by cosine similarity, and Recall@k is the fraction of queries for
which at least one of the k most similar train videos has the query's class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stsep.evaluation.batches import clips_tensor

__all__ = [
    "DEFAULT_RECALL_KS",
    "VideoFeatures",
    "aggregate_video_features",
    "extract_video_features",
    "pool_features",
    "recall_at_k",
    "recall_metrics",
]

logger = logging.getLogger(__name__)

DEFAULT_RECALL_KS = (1, 5, 10, 20)


def pool_features(features: torch.Tensor) -> torch.Tensor:
    """Average per-time-step features over time and L2-normalize them.

    Args:
        features: `[T, B, D]`, the output of `model.forward_features`.

    Returns:
        `[B, D]` unit-length rows (a zero row stays zero).
    """
    if features.ndim != 3:
        raise ValueError(f"features must be [T, B, D] from forward_features, got shape {tuple(features.shape)}")
    return F.normalize(features.float().mean(dim=0), p=2, dim=1)


def recall_at_k(
    query_features: torch.Tensor,
    query_labels: Sequence[int] | torch.Tensor,
    gallery_features: torch.Tensor,
    gallery_labels: Sequence[int] | torch.Tensor,
    *,
    ks: Sequence[int] = DEFAULT_RECALL_KS,
) -> dict[int, float]:
    """Recall@k of cosine-similarity retrieval.

    Features are L2-normalized here, so callers may pass raw features.

    Args:
        query_features: `[Q, D]` (test videos).
        query_labels: `[Q]`.
        gallery_features: `[G, D]` (train videos).
        gallery_labels: `[G]`.
        ks: cut-offs. A k above `G` uses the whole gallery.

    Returns:
        `{k: recall}` with values in [0, 1].
    """
    query_labels = torch.as_tensor(query_labels, dtype=torch.long)
    gallery_labels = torch.as_tensor(gallery_labels, dtype=torch.long)
    if query_features.ndim != 2 or gallery_features.ndim != 2:
        raise ValueError(
            f"features must be [N, D], got query {tuple(query_features.shape)} and gallery {tuple(gallery_features.shape)}"
        )
    if query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError(
            f"query and gallery feature widths differ ({query_features.shape[1]} vs {gallery_features.shape[1]}); "
            "extract both with the same model"
        )
    if query_features.shape[0] == 0 or gallery_features.shape[0] == 0:
        raise ValueError(
            f"retrieval needs at least one query and one gallery video, got {query_features.shape[0]} queries "
            f"and {gallery_features.shape[0]} gallery videos; check the train and test splits of the manifest"
        )
    if query_labels.shape[0] != query_features.shape[0] or gallery_labels.shape[0] != gallery_features.shape[0]:
        raise ValueError("every query and gallery feature row needs exactly one label")
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"recall cut-offs must be positive, got {list(ks)}")

    similarity = F.normalize(query_features.float(), dim=1) @ F.normalize(gallery_features.float(), dim=1).T
    max_k = min(max(int(k) for k in ks), gallery_features.shape[0])
    # A stable sort breaks ties at equal similarity by gallery order, so results are reproducible.
    top_index = similarity.sort(dim=1, descending=True, stable=True).indices[:, :max_k]
    hits = gallery_labels[top_index] == query_labels[:, None]  # [Q, max_k]
    return {int(k): float(hits[:, : min(int(k), max_k)].any(dim=1).float().mean()) for k in ks}


def recall_metrics(recalls: Mapping[int, float]) -> dict[str, float]:
    """MLflow metric names for recalls: `{1: 0.5}` becomes `{"recall_at_1": 0.5}`."""
    return {f"recall_at_{k}": value for k, value in sorted(recalls.items())}


@dataclass(frozen=True)
class VideoFeatures:
    """Video-level retrieval features.

    Attributes:
        video_ids: one per row.
        features: `[N_videos, D]`, time-pooled, averaged over the video's views
            and L2-normalized.
        labels: `[N_videos]`.
    """

    video_ids: tuple[str, ...]
    features: torch.Tensor
    labels: torch.Tensor


def aggregate_video_features(
    view_features: torch.Tensor, video_ids: Sequence[str], labels: Sequence[int] | torch.Tensor
) -> VideoFeatures:
    """Average the view features of each video and L2-normalize the result.

    Args:
        view_features: `[N_views, D]`, normally from `pool_features`.
        video_ids: the video of each view, length `N_views`.
        labels: the label of each view, length `N_views`.
    """
    if view_features.ndim != 2 or view_features.shape[0] != len(video_ids):
        raise ValueError(
            f"expected one [N_views, D] feature row per video id, got shape {tuple(view_features.shape)} "
            f"for {len(video_ids)} ids"
        )
    labels = torch.as_tensor(labels, dtype=torch.long)
    order: dict[str, int] = {}
    for video_id in video_ids:
        order.setdefault(str(video_id), len(order))
    index = torch.tensor([order[str(video_id)] for video_id in video_ids], dtype=torch.long)

    sums = torch.zeros(len(order), view_features.shape[1]).index_add_(0, index, view_features.float())
    video_features = F.normalize(sums / torch.bincount(index).float()[:, None], dim=1)
    video_labels = torch.empty(len(order), dtype=torch.long)
    video_labels[index] = labels
    return VideoFeatures(video_ids=tuple(order), features=video_features, labels=video_labels)


@torch.no_grad()
def extract_video_features(
    model: nn.Module,
    batches: Iterable[Mapping[str, object]],
    *,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device | str = "cpu",
) -> VideoFeatures:
    """Run `model.forward_features` over clip batches and pool them per video.

    Args:
        model: a network with `forward_features(x) -> [T, B, D]`.
        batches: mappings with `"clip"` uint8 `[B, T, H, W, 3]`, `"label"` `[B]`
            and `"video_id"` (length B). Several views of a video are averaged.
        to_input: converts a uint8 clip batch to the float model input
            `[B, T, 3, H, W]` (normally `stsep.data.transforms.to_model_input`).
        device: where the model runs.
    """
    model.eval()
    rows: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    video_ids: list[str] = []
    for batch in batches:
        clips = clips_tensor(batch["clip"]).to(device)
        rows.append(pool_features(model.forward_features(to_input(clips))).cpu())  # [B, D]
        labels.append(torch.from_numpy(np.array(batch["label"], dtype=np.int64)))
        video_ids.extend(str(video_id) for video_id in batch["video_id"])
    if not rows:
        raise ValueError("no clips to extract features from; check the split and the manifest")
    return aggregate_video_features(torch.cat(rows), video_ids, torch.cat(labels))
