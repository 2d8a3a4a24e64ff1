"""Choosing which frames of a video form a clip.

Two samplers, both returning frame indices in playback order:

* Segment-based (TSN): the span ``[start_frame, end_frame)`` is cut into
  ``num_frames`` equal segments. Training takes one random frame per
  segment, and evaluation takes each segment's centre. For multi-clip testing,
  clip ``k`` of ``num_clips`` takes the frame ``(k + 0.5) / num_clips`` of the
  way through each segment instead of the centre.
* Fixed stride: ``num_frames`` frames ``speed`` apart, used by the
  playback-speed probe. Training starts at a random offset in the span, and
  evaluation spreads ``num_clips`` starts evenly over it.

A span shorter than the clip repeats frames (segment-based). Reversal, used
by the arrow-of-time probe, flips the finished index list.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

__all__ = ["clip_indices", "segment_indices", "stride_indices"]

logger = logging.getLogger(__name__)


def _check_span(start_frame: int, end_frame: int) -> None:
    if start_frame < 0 or end_frame <= start_frame:
        raise ValueError(
            f"invalid frame span [{start_frame}, {end_frame}): need 0 <= start_frame < end_frame"
        )


def segment_indices(
    *,
    start_frame: int,
    end_frame: int,
    num_frames: int,
    training: bool,
    rng: np.random.Generator | None = None,
    clip_index: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """Sample one frame per segment of the span (TSN).

    Args:
        start_frame: First frame of the span.
        end_frame: End of the span, exclusive.
        num_frames: Frames in the clip, which is also the number of segments.
        training: Pick a random frame per segment (True) or a fixed one.
        rng: Random generator, required when ``training``.
        clip_index: Which of the ``num_clips`` evaluation clips to sample.
        num_clips: Evaluation clips per video (temporal views).

    Returns:
        int64 ``[num_frames]`` frame indices, non-decreasing.
    """
    _check_span(start_frame, end_frame)
    length = end_frame - start_frame
    segment = length / num_frames
    starts = np.arange(num_frames) * segment
    if training:
        if rng is None:
            raise ValueError("segment_indices needs rng when training=True")
        offsets = rng.random(num_frames) * segment
    else:
        if not 0 <= clip_index < num_clips:
            raise ValueError(f"clip_index must be in [0, {num_clips}), got {clip_index}")
        offsets = np.full(num_frames, (clip_index + 0.5) / num_clips * segment)
    indices = np.floor(starts + offsets).astype(np.int64)
    return start_frame + np.clip(indices, 0, length - 1)


def stride_indices(
    *,
    start_frame: int,
    end_frame: int,
    num_frames: int,
    speed: int,
    training: bool,
    rng: np.random.Generator | None = None,
    clip_index: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """Sample ``num_frames`` frames ``speed`` apart from the span.

    Raises:
        ValueError: When the span is shorter than ``(num_frames - 1) * speed + 1``.

    Returns:
        int64 ``[num_frames]`` frame indices, increasing.
    """
    _check_span(start_frame, end_frame)
    extent = (num_frames - 1) * speed + 1
    slack = end_frame - start_frame - extent
    if slack < 0:
        raise ValueError(
            f"a clip of {num_frames} frames at stride {speed} needs {extent} frames, but the span "
            f"[{start_frame}, {end_frame}) has {end_frame - start_frame}; prepare the manifest "
            "with a longer window or use fewer frames per clip"
        )
    if training:
        if rng is None:
            raise ValueError("stride_indices needs rng when training=True")
        offset = int(rng.integers(0, slack + 1))
    else:
        if not 0 <= clip_index < num_clips:
            raise ValueError(f"clip_index must be in [0, {num_clips}), got {clip_index}")
        offset = int(round((clip_index + 0.5) / num_clips * slack))
    return start_frame + offset + np.arange(num_frames, dtype=np.int64) * speed


def clip_indices(
    row: dict,
    *,
    num_frames: int,
    training: bool,
    rng: np.random.Generator | None = None,
    clip_index: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """Sample the frame indices of one clip of a manifest row.

    Uses fixed-stride sampling when the row has a ``speed``, segment-based
    sampling otherwise, and reverses the indices when ``reverse`` is set.

    Args:
        row: Manifest row with ``start_frame``, ``end_frame``, ``speed``
            (None or NA for segment-based) and ``reverse``.
        num_frames: Frames per clip.
        training: Random (True) or deterministic sampling.
        rng: Random generator, required when ``training``.
        clip_index: Evaluation clip to sample.
        num_clips: Evaluation clips per video.

    Returns:
        int64 ``[num_frames]`` frame indices in the order of the model's time steps.
    """
    start_frame, end_frame = int(row["start_frame"]), int(row["end_frame"])
    speed = row.get("speed")
    common = dict(
        start_frame=start_frame,
        end_frame=end_frame,
        num_frames=num_frames,
        training=training,
        rng=rng,
        clip_index=clip_index,
        num_clips=num_clips,
    )
    if speed is None or pd.isna(speed):
        indices = segment_indices(**common)
    else:
        indices = stride_indices(speed=int(speed), **common)
    if bool(row.get("reverse", False)):
        indices = indices[::-1].copy()
    return indices

