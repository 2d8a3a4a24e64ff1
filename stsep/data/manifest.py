"""The video manifest: one row per video (or per derived clip window).

Every dataset is turned into one table before training, so the clip pipeline
reads a single format. Columns:

==============  =======  ==========================================================
column          type     meaning
==============  =======  ==========================================================
video_id        str      unique id of the row
path            str      local path or ``s3://`` URI of the video file
label           int      class index, ``0 .. num_classes - 1``
label_name      str      class name
split           str      ``train``, ``val`` or ``test``
num_frames      int      frames the decoder can actually return
fps             float    average frames per second
start_frame     int      first frame of the row's span (optional, default 0)
end_frame       int      end of the span, exclusive (optional, default num_frames)
reverse         bool     play the span backwards (optional, default False)
speed           Int64    stride between consecutive sampled frames; empty for
                         segment-based sampling (optional, default empty)
readable        bool     whether probing could decode the file (optional, True)
error           str      why the file is unreadable (optional, "")
width, height   int      frame size in pixels, 0 when unknown (optional)
==============  =======  ==========================================================

The dataset name (``ucf101``, ``ssv2``, ``arrow`` ...) travels in the Parquet
schema metadata and in ``DataFrame.attrs["dataset"]``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stsep.data import _filesystem

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "read_manifest",
    "validate_manifest",
    "write_manifest",
]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: dict[str, str] = {
    "video_id": "str",
    "path": "str",
    "label": "int",
    "label_name": "str",
    "split": "str",
    "num_frames": "int",
    "fps": "float",
}
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "start_frame",
    "end_frame",
    "reverse",
    "speed",
    "readable",
    "error",
    "width",
    "height",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")

_METADATA_KEY = b"stsep.manifest"


def validate_manifest(df: pd.DataFrame, *, source: str = "manifest") -> pd.DataFrame:
    """Check a manifest table and return a copy with normalized column types.

    Optional columns that are absent are filled with their defaults.

    Args:
        df: Manifest table, one row per video.
        source: Name used in error messages (a file path, for example).

    Returns:
        A new table with the columns in canonical order and types.

    Raises:
        ValueError: When a required column is missing, a value is out of range
            or a ``video_id`` repeats. The message names the column and rows.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in df.columns]
    if missing:
        expected = ", ".join(f"{name} ({kind})" for name, kind in REQUIRED_COLUMNS.items())
        raise ValueError(
            f"{source} is missing required column(s) {missing}; a manifest needs {expected}"
        )
    out = df.copy()

    # Required columns, typed.
    for name in ("video_id", "path", "label_name", "split"):
        out[name] = out[name].astype(str)
    for name in ("label", "num_frames"):
        out[name] = _as_int(out[name], name=name, source=source)
    out["fps"] = pd.to_numeric(out["fps"], errors="coerce").astype("float64")
    if out["fps"].isna().any():
        raise ValueError(f"{source}: column 'fps' has empty or non-numeric values")

    # Optional columns, defaulted.
    if "start_frame" not in out:
        out["start_frame"] = 0
    if "end_frame" not in out:
        out["end_frame"] = out["num_frames"]
    out["start_frame"] = _as_int(out["start_frame"], name="start_frame", source=source)
    out["end_frame"] = _as_int(out["end_frame"], name="end_frame", source=source)
    out["reverse"] = out["reverse"].fillna(False).astype(bool) if "reverse" in out else False
    speed = out["speed"] if "speed" in out else pd.Series(pd.NA, index=out.index)
    out["speed"] = pd.to_numeric(speed, errors="coerce").astype("Int64")
    out["readable"] = out["readable"].fillna(True).astype(bool) if "readable" in out else True
    out["error"] = out["error"].fillna("").astype(str) if "error" in out else ""
    for name in ("width", "height"):
        values = out[name] if name in out else pd.Series(0, index=out.index)
        out[name] = _as_int(values.fillna(0), name=name, source=source)

    _check_values(out, source=source)
    extra = [name for name in out.columns if name not in REQUIRED_COLUMNS and name not in OPTIONAL_COLUMNS]
    out = out[list(REQUIRED_COLUMNS) + list(OPTIONAL_COLUMNS) + extra]
    out.attrs = dict(df.attrs)
    return out.reset_index(drop=True)


def _as_int(values: pd.Series, *, name: str, source: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any():
        rows = list(numeric.index[numeric.isna()][:5])
        raise ValueError(f"{source}: column {name!r} has empty or non-numeric values in rows {rows}")
    if not np.all(np.mod(numeric, 1) == 0):
        raise ValueError(f"{source}: column {name!r} must hold whole numbers")
    return numeric.astype("int64")


def _check_values(df: pd.DataFrame, *, source: str) -> None:
    def fail(mask: pd.Series, what: str) -> None:
        if mask.any():
            ids = df.loc[mask, "video_id"].head(5).tolist()
            raise ValueError(f"{source}: {what} ({int(mask.sum())} rows, e.g. video_id {ids})")

    fail(~df["split"].isin(SPLITS), f"column 'split' must be one of {list(SPLITS)}")
    fail(df["label"] < 0, "column 'label' must be >= 0")
    fail(df["num_frames"] < 0, "column 'num_frames' must be >= 0")
    fail(df["speed"].fillna(1) < 1, "column 'speed' must be >= 1 or empty")
    readable = df["readable"]
    fail(readable & (df["num_frames"] < 1), "readable rows need num_frames >= 1")
    fail(readable & (df["start_frame"] < 0), "column 'start_frame' must be >= 0")
    fail(
        readable & (df["end_frame"] <= df["start_frame"]),
        "column 'end_frame' must be greater than 'start_frame'",
    )
    fail(
        readable & (df["end_frame"] > df["num_frames"]),
        "column 'end_frame' must not exceed 'num_frames'",
    )
    duplicated = df["video_id"].duplicated()
    fail(duplicated, "column 'video_id' must be unique")


def read_manifest(path: str) -> pd.DataFrame:
    """Read and validate a manifest written by :func:`write_manifest`.

    Args:
        path: Local path or ``s3://`` URI of a Parquet file.

    Returns:
        The validated manifest, with the dataset name in ``attrs["dataset"]``
        when the file records one.

    Raises:
        ValueError: When the file is missing or the table is not a valid
            manifest (the message names the missing columns).
    """
    if not _filesystem.exists(path):
        raise ValueError(
            f"manifest not found: {path!r}; create one with pipelines/prepare.py --output {path}"
        )
    filesystem, resolved = _filesystem.resolve(path)
    table = pq.read_table(resolved, filesystem=filesystem)
    df = table.to_pandas()
    metadata = table.schema.metadata or {}
    if _METADATA_KEY in metadata:
        df.attrs.update(json.loads(metadata[_METADATA_KEY]))
    return validate_manifest(df, source=path)


def write_manifest(df: pd.DataFrame, path: str, *, dataset: str | None = None) -> None:
    """Validate a manifest and write it as Parquet.

    A local file is written to a temporary file beside it and renamed into
    place, so readers never see a half-written manifest. An S3 object is
    written with one upload, which the store applies atomically.

    Args:
        df: Manifest table.
        path: Local path or ``s3://`` URI of the Parquet file.
        dataset: Dataset name stored in the file's metadata. None keeps
            ``df.attrs["dataset"]`` when set.
    """
    out = validate_manifest(df, source="manifest to write")
    attrs = dict(df.attrs)
    if dataset is not None:
        attrs["dataset"] = dataset
    table = pa.Table.from_pandas(out, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[_METADATA_KEY] = json.dumps(attrs).encode()
    table = table.replace_schema_metadata(metadata)

    if _filesystem.is_remote(path):
        filesystem, resolved = _filesystem.resolve(path)
        pq.write_table(table, resolved, filesystem=filesystem)
        return

    _, resolved = _filesystem.resolve(path)
    directory = os.path.dirname(resolved)
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".manifest-", suffix=".parquet")
    os.close(handle)
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, resolved)
    except BaseException:
        os.unlink(temporary)
        raise
    logger.info("wrote manifest %s (%d rows)", path, len(out))
