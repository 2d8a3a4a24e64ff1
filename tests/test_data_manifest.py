"""Tests of the manifest table: validation, defaults, Parquet round trip."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from stsep.data.manifest import read_manifest, validate_manifest, write_manifest


def _manifest(**overrides) -> pd.DataFrame:
    table = pd.DataFrame(
        dict(
            video_id=["a", "b", "c"],
            path=["/videos/a.avi", "/videos/b.avi", "s3://bucket/c.webm"],
            label=[0, 1, 1],
            label_name=["walk", "run", "run"],
            split=["train", "train", "val"],
            num_frames=[40, 25, 30],
            fps=[25.0, 30.0, 12.0],
        )
    )
    for name, values in overrides.items():
        table[name] = values
    return table


def test_validate_fills_optional_columns():
    table = validate_manifest(_manifest())

    assert table["start_frame"].tolist() == [0, 0, 0]
    assert table["end_frame"].tolist() == [40, 25, 30]
    assert table["reverse"].tolist() == [False, False, False]
    assert table["speed"].isna().all()
    assert table["readable"].tolist() == [True, True, True]
    assert table["error"].tolist() == ["", "", ""]
    assert table["width"].tolist() == [0, 0, 0]


def test_validate_names_missing_columns():
    table = _manifest().drop(columns=["label", "fps"])

    with pytest.raises(ValueError, match=r"missing required column\(s\) \['label', 'fps'\]"):
        validate_manifest(table, source="my.parquet")


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("split", ["train", "dev", "val"], "split"),
        ("label", [0, -1, 1], "label"),
        ("video_id", ["a", "a", "c"], "unique"),
        ("end_frame", [40, 26, 30], "must not exceed"),
        ("start_frame", [10, 0, 30], "greater than 'start_frame'"),
        ("speed", [1, 0, None], "speed"),
        ("num_frames", [40, "many", 30], "non-numeric"),
    ],
)
def test_validate_rejects_bad_values(column, values, message):
    with pytest.raises(ValueError, match=message):
        validate_manifest(_manifest(**{column: values}))


def test_unreadable_rows_skip_span_checks():
    table = validate_manifest(_manifest(readable=[True, False, True], num_frames=[40, 0, 30], error=["", "missing", ""]))

    assert table["readable"].tolist() == [True, False, True]
    assert table.loc[1, "error"] == "missing"


def test_round_trip_keeps_rows_and_dataset(tmp_path):
    path = tmp_path / "manifests" / "m.parquet"
    table = _manifest(speed=[None, 2, 4], reverse=[False, True, False], start_frame=[0, 5, 0], end_frame=[40, 25, 30])

    write_manifest(table, str(path), dataset="speed")
    loaded = read_manifest(str(path))

    assert loaded.attrs["dataset"] == "speed"
    assert loaded["video_id"].tolist() == ["a", "b", "c"]
    assert loaded["speed"].tolist()[1:] == [2, 4]
    assert pd.isna(loaded["speed"].iloc[0])
    assert loaded["reverse"].tolist() == [False, True, False]
    assert loaded["start_frame"].tolist() == [0, 5, 0]
    assert loaded["fps"].tolist() == [25.0, 30.0, 12.0]


def test_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "m.parquet"

    write_manifest(_manifest(), str(path))
    write_manifest(_manifest(label=[1, 1, 0]), str(path))

    assert os.listdir(tmp_path) == ["m.parquet"]
    assert read_manifest(str(path))["label"].tolist() == [1, 1, 0]


def test_invalid_table_leaves_old_file(tmp_path):
    path = tmp_path / "m.parquet"
    write_manifest(_manifest(), str(path))

    with pytest.raises(ValueError):
        write_manifest(_manifest(split=["train", "nope", "val"]), str(path))

    assert read_manifest(str(path))["split"].tolist() == ["train", "train", "val"]


def test_read_missing_manifest_names_path(tmp_path):
    with pytest.raises(ValueError, match="manifest not found.*prepare.py"):
        read_manifest(str(tmp_path / "absent.parquet"))
