"""Video data layer: manifests, dataset layouts, temporal probes and clip decoding.

The usual flow: :func:`prepare_manifest` reads a dataset layout, probes each
video once and writes a manifest; :func:`build_clip_dataset` turns a
manifest split into a Ray Data pipeline of uint8 clips; the training loop
converts each batch with :func:`to_model_input` on its device.
"""

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
from stsep.data.prepare import DATASETS, prepare_manifest, summarize_manifest
from stsep.data.pipeline import ClipCollateFn, ClipDecoder, build_clip_dataset, select_split
from stsep.data.safe_decode import DecodeProcess
from stsep.data.skips import (
    SkipCounter,
    SkipLog,
    SkipReport,
    UnreadableFractionError,
    read_skip_report,
    skip_counter_name,
)
from stsep.data.transforms import to_model_input

__all__ = [
    "DATASETS",    "NO_FLIP_DATASETS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "ClipCollateFn",
    "ClipConfig",
    "ClipDecoder",
    "DecodeProcess",
    "SkipCounter",
    "SkipLog",
    "SkipReport",
    "UnreadableFractionError",
    "VideoInfo",
    "VideoUnreadableError",
    "build_clip_dataset",
    "decode_clip",
    "decode_views",
    "flip_allowed",
    "prepare_manifest",
    "probe_video",
    "read_frames",
    "read_manifest",
    "read_skip_report",
    "select_split",
    "skip_counter_name",
    "summarize_manifest",
    "to_model_input",
    "validate_manifest",
    "write_manifest",
]
