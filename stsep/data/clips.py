"""Clip configuration and decoding of one manifest row into clips.

:func:`decode_views` turns a manifest row into uint8 clips: it samples frame
indices (:mod:`stsep.data.sampling`), decodes only those frames
(:mod:`stsep.data.decode`, optionally in a :class:`DecodeProcess`) and crops
them (:mod:`stsep.data.transforms`). It is the plain function path used by
the Ray Data pipeline, by DataLoader baselines and by evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from stsep.data import decode, sampling, transforms
from stsep.data.safe_decode import DecodeProcess

__all__ = [
    "DEFAULT_DECODE_FUNCTION",
    "NO_FLIP_DATASETS",
    "ClipConfig",
    "decode_clip",
    "decode_views",
    "flip_allowed",
]

logger = logging.getLogger(__name__)

# Datasets whose label changes under a left-right mirror or depends on
# frame order: Something-Something V2 templates name directions ("from left
# to right"), and the temporal probes must be decided by time alone.
NO_FLIP_DATASETS = frozenset({"ssv2", "arrow", "speed", "demo"})

# Frame reader that a DecodeProcess runs, as "module:name".
DEFAULT_DECODE_FUNCTION = "stsep.data.decode:read_frames"


def flip_allowed(dataset: str | None) -> bool:
    """Return whether horizontal flip keeps the labels of ``dataset`` valid."""
    return dataset not in NO_FLIP_DATASETS


@dataclass(frozen=True)
class ClipConfig:
    """Clip sampling, decoding and cropping settings.

    Attributes:
        num_frames: Frames per clip, T (one per time step of the model).
        crop_size: Output height and width in pixels.
        short_side: Frames are resized so their shorter side has this many
            pixels before cropping.
        scale_range: Scale jitter for training crops: the crop side is a
            uniform fraction in this range of the resized short side.
        flip_allowed: Mirror training clips left to right with probability
            0.5. Must be False for the datasets in ``NO_FLIP_DATASETS``.
        num_clips: Temporal views per video in evaluation.
        num_crops: Spatial views per clip in evaluation (1 centre, 3 left,
            centre and right).
        decode_timeout_s: Seconds one video may take to decode before its
            clip is skipped.
        max_unreadable_fraction: Largest fraction of a split's videos that
            may be unreadable before the run fails.
        decode_threads: FFmpeg decoding threads per decoder.
    """

    num_frames: int = 8
    crop_size: int = 112
    short_side: int = 128
    scale_range: tuple[float, float] = (0.8, 1.0)
    flip_allowed: bool = True
    num_clips: int = 1
    num_crops: int = 1
    decode_timeout_s: float = 30.0
    max_unreadable_fraction: float = 0.05
    decode_threads: int = 1

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"invalid ClipConfig: {message}")

        if self.num_frames < 1:
            fail(f"num_frames must be >= 1, got {self.num_frames}")
        if self.crop_size < 1 or self.short_side < self.crop_size:
            fail(f"need 1 <= crop_size <= short_side, got crop_size={self.crop_size}, short_side={self.short_side}")
        low, high = self.scale_range
        if not 0 < low <= high <= 1:
            fail(f"scale_range must satisfy 0 < min <= max <= 1, got {self.scale_range}")
        if self.num_clips < 1 or self.num_crops < 1:
            fail(f"num_clips and num_crops must be >= 1, got {self.num_clips} and {self.num_crops}")
        if self.decode_timeout_s <= 0:
            fail(f"decode_timeout_s must be > 0, got {self.decode_timeout_s}")
        if not 0 <= self.max_unreadable_fraction <= 1:
            fail(f"max_unreadable_fraction must be in [0, 1], got {self.max_unreadable_fraction}")
        if self.decode_threads < 0:
            fail(f"decode_threads must be >= 0, got {self.decode_threads}")

    @classmethod
    def for_dataset(cls, dataset: str | None, **overrides: object) -> ClipConfig:
        """Return a config with ``flip_allowed`` set for ``dataset``, then ``overrides``."""
        return replace(cls(), flip_allowed=flip_allowed(dataset), **overrides)

    @property
    def num_views(self) -> int:
        """Views per video in evaluation, ``num_clips * num_crops``."""
        return self.num_clips * self.num_crops


def _read(
    row: Mapping,
    indices: np.ndarray,
    *,
    clip: ClipConfig,
    decoder: DecodeProcess | None,
    decode_function: str = DEFAULT_DECODE_FUNCTION,
) -> np.ndarray:
    request = dict(
        path=str(row["path"]),
        indices=indices.tolist(),
        short_side=clip.short_side,
        width=int(row.get("width", 0) or 0),
        height=int(row.get("height", 0) or 0),
        num_threads=clip.decode_threads,
    )
    if decoder is None:
        frames = decode.read_frames(**request)
    else:
        frames = decoder.call(decode_function, **request)
    # Without the stored size decord cannot resize while decoding.
    return transforms.resize_short_side(frames, short_side=clip.short_side)


def decode_views(
    row: Mapping,
    *,
    clip: ClipConfig,
    training: bool,
    rng: np.random.Generator | None = None,
    decoder: DecodeProcess | None = None,
    decode_function: str = DEFAULT_DECODE_FUNCTION,
) -> np.ndarray:
    """Decode the clips of one manifest row.

    Training yields one clip: random segment frames, a scale-jittered random
    crop and, when allowed, a random flip. Evaluation yields
    ``clip.num_views`` clips, ordered ``view = clip_index * num_crops +
    crop_index``, and all their frames are decoded in one pass.

    Args:
        row: Manifest row (``path``, ``start_frame``, ``end_frame``, ``speed``,
            ``reverse``, ``width``, ``height``).
        clip: Clip settings.
        training: Training (one random view) or evaluation (all views).
        rng: Random generator, required when ``training``.
        decoder: Child process to decode in; None decodes in this process.
        decode_function: Frame reader that ``decoder`` runs, as
            ``"module:name"``. Without a decoder, frames are read with
            :func:`stsep.data.decode.read_frames` in this process.

    Returns:
        uint8 ``[V, T, crop_size, crop_size, 3]`` with V = 1 in training.

    Raises:
        VideoUnreadableError: When the video cannot be decoded.
    """
    if training:
        if rng is None:
            raise ValueError("decode_views needs rng when training=True")
        indices = sampling.clip_indices(row, num_frames=clip.num_frames, training=True, rng=rng)
        frames = _read(row, indices, clip=clip, decoder=decoder, decode_function=decode_function)  # [T, h, w, 3]
        frames = transforms.random_scale_crop(
            frames, crop_size=clip.crop_size, scale_range=clip.scale_range, rng=rng
        )
        if clip.flip_allowed and rng.random() < 0.5:
            frames = transforms.horizontal_flip(frames)
        return frames[None]

    per_clip = [
        sampling.clip_indices(
            row, num_frames=clip.num_frames, training=False, clip_index=k, num_clips=clip.num_clips
        )
        for k in range(clip.num_clips)
    ]
    all_indices = np.concatenate(per_clip)
    frames = _read(row, all_indices, clip=clip, decoder=decoder, decode_function=decode_function)  # [num_clips * T, h, w, 3]
    views = []
    for k in range(clip.num_clips):
        clip_frames = frames[k * clip.num_frames : (k + 1) * clip.num_frames]
        for crop_index in range(clip.num_crops):
            views.append(
                transforms.spatial_crop(
                    clip_frames, crop_size=clip.crop_size, crop_index=crop_index, num_crops=clip.num_crops
                )
            )
    return np.stack(views)  # [V, T, crop, crop, 3]


def decode_clip(
    row: Mapping,
    *,
    clip: ClipConfig,
    training: bool,
    rng: np.random.Generator | None = None,
    view: int = 0,
    decoder: DecodeProcess | None = None,
) -> np.ndarray:
    """Decode one clip of a manifest row without Ray.

    Args:
        row: Manifest row.
        clip: Clip settings.
        training: Random training clip, or evaluation view ``view``.
        rng: Random generator, required when ``training``.
        view: Evaluation view, ``clip_index * num_crops + crop_index``.
        decoder: Child process to decode in; None decodes in this process.

    Returns:
        uint8 ``[T, crop_size, crop_size, 3]``.
    """
    if training:
        return decode_views(row, clip=clip, training=True, rng=rng, decoder=decoder)[0]
    if not 0 <= view < clip.num_views:
        raise ValueError(f"view must be in [0, {clip.num_views}), got {view}")
    single = replace(clip, num_clips=1, num_crops=1)
    clip_index, crop_index = divmod(view, clip.num_crops)
    indices = sampling.clip_indices(
        row, num_frames=clip.num_frames, training=False, clip_index=clip_index, num_clips=clip.num_clips
    )
    frames = _read(row, indices, clip=single, decoder=decoder)
    return transforms.spatial_crop(frames, crop_size=clip.crop_size, crop_index=crop_index, num_crops=clip.num_crops)
