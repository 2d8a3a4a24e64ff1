"""Spatial clip transforms and the conversion to model input.

Clips stay uint8 ``[T, H, W, 3]`` through every transform here, so they
travel through Ray Data and the object store at a quarter of the float size.
:func:`to_model_input` converts a batch to normalized float on the training
device.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "horizontal_flip",
    "random_scale_crop",
    "resize",
    "resize_short_side",
    "spatial_crop",
    "to_model_input",
]

logger = logging.getLogger(__name__)

# ImageNet RGB statistics, in [0, 1] units, the usual normalization for
# ResNet-style backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize(frames: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Resize uint8 ``[T, H, W, 3]`` frames to ``[T, height, width, 3]`` (bilinear, antialiased)."""
    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [T, h, w, 3]


def resize_short_side(frames: np.ndarray, *, short_side: int) -> np.ndarray:
    """Resize uint8 ``[T, H, W, 3]`` frames so the shorter side is ``short_side`` pixels."""
    height, width = frames.shape[1:3]
    if min(height, width) == short_side:
        return frames
    if height <= width:
        return resize(frames, height=short_side, width=max(1, round(width * short_side / height)))
    return resize(frames, height=max(1, round(height * short_side / width)), width=short_side)


def random_scale_crop(
    frames: np.ndarray,
    *,
    crop_size: int,
    scale_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Crop a random square with scale jitter and resize it to ``crop_size``.

    The square's side is ``s * min(H, W)`` with ``s`` uniform in
    ``scale_range``, and its position is uniform over the frame. Every frame of
    the clip gets the same crop.

    Args:
        frames: uint8 ``[T, H, W, 3]``.
        crop_size: Output side in pixels.
        scale_range: ``(min, max)`` fraction of the short side, in (0, 1].
        rng: Random generator.

    Returns:
        uint8 ``[T, crop_size, crop_size, 3]``.
    """
    height, width = frames.shape[1:3]
    scale = rng.uniform(*scale_range)
    side = int(np.clip(round(scale * min(height, width)), 1, min(height, width)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = frames[:, top : top + side, left : left + side]
    return resize(crop, height=crop_size, width=crop_size)


def spatial_crop(frames: np.ndarray, *, crop_size: int, crop_index: int = 0, num_crops: int = 1) -> np.ndarray:
    """Take crop ``crop_index`` of ``num_crops`` squares along the long side.

    One crop is the centre, and three are left, centre, right (top, centre,
    bottom for portrait frames), evenly spaced in general.

    Args:
        frames: uint8 ``[T, H, W, 3]`` with both sides >= ``crop_size``.
        crop_size: Output side in pixels.
        crop_index: Which crop, ``0 .. num_crops - 1``.
        num_crops: Crops per clip (spatial views).

    Returns:
        uint8 ``[T, crop_size, crop_size, 3]``.
    """
    height, width = frames.shape[1:3]
    if min(height, width) < crop_size:
        raise ValueError(
            f"cannot crop {crop_size}x{crop_size} from {height}x{width} frames; "
            "set short_side >= crop_size"
        )
    if not 0 <= crop_index < num_crops:
        raise ValueError(f"crop_index must be in [0, {num_crops}), got {crop_index}")

    def position(extent: int, along_long_side: bool) -> int:
        slack = extent - crop_size
        if not along_long_side or num_crops == 1:
            return slack // 2
        return round(crop_index * slack / (num_crops - 1))

    top = position(height, height > width)
    left = position(width, width >= height)
    return frames[:, top : top + crop_size, left : left + crop_size]


def horizontal_flip(frames: np.ndarray) -> np.ndarray:
    """Mirror uint8 ``[T, H, W, 3]`` frames left to right."""
    return np.ascontiguousarray(frames[:, :, ::-1])


def to_model_input(clips: torch.Tensor) -> torch.Tensor:
    """Convert a batch of uint8 clips to normalized float model input.

    Runs on the clips' device, so call it after moving the uint8 batch to the
    training device.

    Args:
        clips: uint8 ``[B, T, H, W, 3]``.

    Returns:
        float32 ``[B, T, 3, H, W]``, ``(x / 255 - mean) / std`` per channel
        with ImageNet mean and std.
    """
    if clips.dtype != torch.uint8 or clips.dim() != 5 or clips.shape[-1] != 3:
        raise ValueError(
            f"to_model_input expects uint8 [B, T, H, W, 3] clips, got {clips.dtype} {tuple(clips.shape)}"
        )
    mean = torch.tensor(IMAGENET_MEAN, device=clips.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=clips.device).view(1, 1, 3, 1, 1)
    frames = clips.permute(0, 1, 4, 2, 3).float().div_(255.0)  # [B, T, 3, H, W]
    return frames.sub_(mean).div_(std)
