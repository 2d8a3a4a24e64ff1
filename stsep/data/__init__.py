"""Video data layer: manifests, dataset layouts, temporal probes and clip decoding.

The usual flow has three steps. :func:`prepare_manifest` reads a dataset
layout, probes each video once and writes a manifest. :func:`build_clip_dataset`
turns one split of a manifest into a Ray Data pipeline of uint8 clips. The
training loop converts each batch with :func:`to_model_input` on its device.

Names are imported on first use, so a process that only decodes frames (the
decoding child process, for example) does not import Ray or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> module that defines it.
_EXPORTS = {
    "ClipCollateFn": "pipeline",
    "ClipConfig": "clips",
    "ClipDecoder": "pipeline",
    "DATASETS": "prepare",
    "DecodeProcess": "safe_decode",
    "NO_FLIP_DATASETS": "clips",
    "OPTIONAL_COLUMNS": "manifest",
    "REQUIRED_COLUMNS": "manifest",
    "SPLITS": "manifest",
    "SkipCounter": "skips",
    "SkipLog": "skips",
    "SkipReport": "skips",
    "UnreadableFractionError": "skips",
    "VideoInfo": "decode",
    "VideoUnreadableError": "decode",
    "build_clip_dataset": "pipeline",
    "decode_clip": "clips",
    "decode_views": "clips",
    "find_unreadable_fraction_error": "skips",
    "flip_allowed": "clips",
    "prepare_manifest": "prepare",
    "probe_video": "decode",
    "read_frames": "decode",
    "read_manifest": "manifest",
    "read_skip_report": "skips",
    "select_split": "pipeline",
    "skip_counter_name": "skips",
    "summarize_manifest": "prepare",
    "to_model_input": "transforms",
    "validate_manifest": "manifest",
    "write_manifest": "manifest",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from stsep.data.clips import NO_FLIP_DATASETS, ClipConfig, decode_clip, decode_views, flip_allowed
    from stsep.data.decode import VideoInfo, VideoUnreadableError, probe_video, read_frames
    from stsep.data.manifest import (
        OPTIONAL_COLUMNS,
        REQUIRED_COLUMNS,
        SPLITS,
        read_manifest,
        validate_manifest,
        write_manifest,
    )
    from stsep.data.pipeline import ClipCollateFn, ClipDecoder, build_clip_dataset, select_split
    from stsep.data.prepare import DATASETS, prepare_manifest, summarize_manifest
    from stsep.data.safe_decode import DecodeProcess
    from stsep.data.skips import (
        SkipCounter,
        SkipLog,
        SkipReport,
        UnreadableFractionError,
        find_unreadable_fraction_error,
        read_skip_report,
        skip_counter_name,
    )
    from stsep.data.transforms import to_model_input


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stsep.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stsep.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
