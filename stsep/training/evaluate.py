"""Distributed evaluation of one epoch: loss, top-1/top-5, confusion matrix and firing rates.

Every worker runs its shard of the validation split through the unwrapped
model (no DDP collective inside the loop, so shards of different sizes are
fine), then the workers exchange per-video logit sums with one all-gather.
Views of one video (clips x crops) may land on different workers, so the
views are summed after the gather, which gives the multi-view average of
each video before top-1 and top-5 are computed. Loss and firing rates are all-reduced as sums.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from stsep.evaluation.metrics import per_class_accuracy, topk_accuracy
from stsep.evaluation.metrics import confusion_matrix as count_confusion
from stsep.profile import GROUPS, record_firing_rates

__all__ = ["EvalResult", "evaluate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """Validation results of one epoch, identical on every worker.

    Attributes:
        loss: Mean cross-entropy per clip (view), without label smoothing.
        top1: Video-level top-1 accuracy in [0, 1].
        top5: Video-level top-5 accuracy in [0, 1].
        num_videos: Videos evaluated over all workers.
        num_clips: Clips (views) evaluated over all workers.
        firing_rates: Mean firing rate per group (stem, stage1..stage4).
        confusion: Counts ``[num_classes, num_classes]``, rows are true classes.
        class_accuracy: Recall per class, NaN for a class without videos.
        seconds: Wall time of the evaluation.
    """

    loss: float
    top1: float
    top5: float
    num_videos: int
    num_clips: int
    firing_rates: dict[str, float]
    confusion: np.ndarray
    class_accuracy: np.ndarray
    seconds: float

    def metrics(self, prefix: str = "val") -> dict[str, float]:
        """Return the scalar results as flat metric names (``val_top1``, ``firing_rate_stage1``, ...)."""
        values = {
            f"{prefix}_loss": self.loss,
            f"{prefix}_top1": self.top1,
            f"{prefix}_top5": self.top5,
            f"{prefix}_videos": float(self.num_videos),
        }
        values.update({f"firing_rate_{group}": rate for group, rate in self.firing_rates.items()})
        return values


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    *,
    num_classes: int,
    device: torch.device,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], Any],
) -> EvalResult:
    """Evaluate `model` (unwrapped, not DDP) on this worker's batches and combine all workers.

    Args:
        model: The model; put in eval mode here and back in train mode after.
        batches: Dicts with ``clip`` uint8 ``[B, T, H, W, 3]``, ``label`` ``[B]`` and ``video_id`` (list of str).
        num_classes: Classes of the model's head.
        device: Device of the model.
        to_input: Converts uint8 clips on the device to model input ``[B, T, 3, H, W]``.
        autocast: Returns the autocast context of the training step.
    """
    started = time.perf_counter()
    model.eval()
    loss_sum, clip_count = 0.0, 0
    video_sums: dict[str, np.ndarray] = {}
    video_labels: dict[str, int] = {}

    with record_firing_rates(model) as recorder:
        for batch in batches:
            clips = batch["clip"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            with autocast():
                logits = model(to_input(clips)).float()  # [B, num_classes]
            loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            clip_count += labels.numel()

            for video_id, row, label in zip(batch["video_id"], logits.cpu().numpy(), labels.cpu().tolist()):
                key = str(video_id)
                video_sums[key] = video_sums.get(key, 0.0) + row
                video_labels[key] = int(label)
        local_rates = recorder.rates()
    model.train()

    # Combine: every worker gets every video's logit sum (views may be split across workers).
    gathered = _all_gather((video_sums, video_labels))
    merged_sums: dict[str, np.ndarray] = {}
    merged_labels: dict[str, int] = {}
    for sums, labels in gathered:
        for key, row in sums.items():
            merged_sums[key] = merged_sums.get(key, 0.0) + row
        merged_labels.update(labels)

    totals = _all_reduce_sum(
        torch.tensor(
            [loss_sum, float(clip_count)] + [local_rates.get(group, 0.0) * clip_count for group in GROUPS],
            dtype=torch.float64,
        ),
        device=device,
    )
    total_clips = int(totals[1])
    if total_clips == 0 or not merged_sums:
        raise RuntimeError("the validation split yielded no clips on any worker; check the manifest's val split")
    rates = {group: float(totals[2 + index] / total_clips) for index, group in enumerate(GROUPS)}

    keys = sorted(merged_sums)
    scores = torch.from_numpy(np.stack([merged_sums[key] for key in keys]))  # [N_videos, num_classes]
    targets = torch.tensor([merged_labels[key] for key in keys], dtype=torch.long)
    accuracy = topk_accuracy(scores, targets, ks=(1, 5))
    confusion = count_confusion(scores.argmax(dim=1), targets, num_classes=num_classes)
    return EvalResult(
        loss=float(totals[0] / total_clips),
        top1=accuracy[1],
        top5=accuracy[5],
        num_videos=len(keys),
        num_clips=total_clips,
        firing_rates=rates,
        confusion=confusion,
        class_accuracy=per_class_accuracy(confusion),
        seconds=time.perf_counter() - started,
    )


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather(value: Any) -> list[Any]:
    if not _distributed():
        return [value]
    output: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(output, value)
    return output


def _all_reduce_sum(tensor: torch.Tensor, *, device: torch.device) -> torch.Tensor:
    if not _distributed():
        return tensor
    # NCCL reduces only tensors on the GPU; gloo takes CPU tensors.
    reduced = tensor.to(device)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.cpu()
