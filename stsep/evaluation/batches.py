"""Batches of evaluation views from a manifest split, through Ray Data or in-process.

Both engines yield the same batch layout: `"clip"` uint8 `[B, T, H, W, 3]`,
`"label"` `[B]`, `"video_id"` (length B) and `"view"` `[B]`, with every view
of every readable video (`num_clips x num_crops` per video).

- `ray` builds the clip dataset of `stsep.data.build_clip_dataset`, so
  decoding runs in parallel actors across the cluster.
- `local` decodes with `stsep.data.decode_views` in one child process of
  this one (with the same per-video time limit), which needs no Ray and suits
  small checks.

Unreadable videos are skipped with one warning each and counted. More than
`clip.max_unreadable_fraction` of the split raises an error.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

__all__ = ["ENGINES", "Skips", "clips_tensor", "iter_view_batches"]

logger = logging.getLogger(__name__)

ENGINES = ("ray", "local")


@dataclass
class Skips:
    """Videos that could not be decoded, as (path, reason) pairs, filled once the batches are consumed."""

    skipped: list[tuple[str, str]] = field(default_factory=list)


def iter_view_batches(
    manifest: pd.DataFrame | str,
    *,
    split: str,
    clip,
    batch_size: int,
    engine: str = "ray",
    limit_per_class: int | None = None,
    skips: Skips | None = None,
) -> Iterator[dict[str, object]]:
    """Yield evaluation batches of every view of every video in `split`.

    Args:
        manifest: manifest table or path (local or s3://).
        split: `train`, `val` or `test`.
        clip: a `stsep.data.ClipConfig`, whose `num_clips` and `num_crops` set the views.
        batch_size: views per batch.
        engine: `ray` or `local` (see the module docstring).
        limit_per_class: keep at most this many videos per class.
        skips: collects the skipped videos.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    skips = skips if skips is not None else Skips()
    if engine == "ray":
        yield from _ray_batches(
            manifest, split=split, clip=clip, batch_size=batch_size, limit_per_class=limit_per_class, skips=skips
        )
    else:
        yield from _local_batches(
            manifest, split=split, clip=clip, batch_size=batch_size, limit_per_class=limit_per_class, skips=skips
        )


def _ray_batches(manifest, *, split, clip, batch_size, limit_per_class, skips: Skips) -> Iterator[dict[str, object]]:
    from stsep.data import build_clip_dataset, read_skip_report

    counter_name = f"stsep-evaluate-{split}-{uuid.uuid4().hex[:8]}"
    dataset = build_clip_dataset(
        manifest, split=split, clip=clip, training=False, limit_per_class=limit_per_class, skip_counter=counter_name
    )
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield {
            "clip": batch["clip"],
            "label": batch["label"],
            "video_id": [str(video_id) for video_id in batch["video_id"]],
            "view": batch["view"],
        }
    report = read_skip_report(counter_name)
    skips.skipped.extend(zip(report.files, report.reasons))


def _local_batches(manifest, *, split, clip, batch_size, limit_per_class, skips: Skips) -> Iterator[dict[str, object]]:
    from stsep.data import DecodeProcess, VideoUnreadableError, decode_views, select_split

    rows = select_split(manifest, split=split, limit_per_class=limit_per_class)
    # A child process with a time limit per video, so a file that hangs or crashes the decoder costs one video.
    with DecodeProcess(timeout_s=clip.decode_timeout_s) as decoder:
        yield from _decode_rows(rows, split=split, clip=clip, batch_size=batch_size, skips=skips, decoder=decoder)


def _decode_rows(rows: pd.DataFrame, *, split, clip, batch_size, skips: Skips, decoder) -> Iterator[dict[str, object]]:
    from stsep.data import UnreadableFractionError, VideoUnreadableError, decode_views

    max_skipped = int(clip.max_unreadable_fraction * len(rows))
    pending: dict[str, list] = {"clip": [], "label": [], "video_id": [], "view": []}

    for row in rows.to_dict("records"):
        if not row["readable"]:
            skips.skipped.append((row["path"], row["error"] or "unreadable when the manifest was prepared"))
        else:
            try:
                views = decode_views(row, clip=clip, training=False, decoder=decoder)  # [V, T, H, W, 3]
            except VideoUnreadableError as error:
                logger.warning("skipping unreadable video %s: %s", row["path"], error)
                skips.skipped.append((row["path"], str(error)))
                views = None
            if views is not None:
                for view_index, view in enumerate(views):
                    pending["clip"].append(view)
                    pending["label"].append(int(row["label"]))
                    pending["video_id"].append(str(row["video_id"]))
                    pending["view"].append(view_index)
        if len(skips.skipped) > max_skipped:
            raise UnreadableFractionError(
                split=split, count=len(skips.skipped), total=len(rows), limit=clip.max_unreadable_fraction,
                files=tuple(path for path, _ in skips.skipped),
            )
        while len(pending["clip"]) >= batch_size:
            yield _take(pending, batch_size)
    if pending["clip"]:
        yield _take(pending, len(pending["clip"]))


def _take(pending: dict[str, list], count: int) -> dict[str, object]:
    batch = {
        "clip": np.stack(pending["clip"][:count]),
        "label": np.asarray(pending["label"][:count], dtype=np.int64),
        "video_id": list(pending["video_id"][:count]),
        "view": np.asarray(pending["view"][:count], dtype=np.int64),
    }
    for values in pending.values():
        del values[:count]
    return batch


def clips_tensor(clips) -> torch.Tensor:
    """Return a uint8 clip batch as a tensor, copying arrays that are read-only (Ray Data hands those out)."""
    if isinstance(clips, torch.Tensor):
        return clips
    array = np.asarray(clips)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)
