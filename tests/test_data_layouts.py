"""Tests of the dataset layout readers against tiny trees written by PyAV."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from stsep.data import layouts
from tests.plugins.videos import make_folder_dataset, make_ssv2


def _by_id(table: pd.DataFrame) -> dict[str, dict]:
    return {row["video_id"]: row for row in table.to_dict("records")}


@pytest.mark.parametrize("split", [1, 2])
def test_ucf101_labels_and_splits(ucf101_root, split):
    root, expected = ucf101_root

    rows = _by_id(layouts.read_ucf101(str(root), split=split))

    assert set(rows) == set(expected[f"split{split}"])
    for video_id, row in rows.items():
        class_name = video_id.split("_")[1]
        assert row["label"] == expected["classes"][class_name]
        assert row["label_name"] == class_name
        assert row["split"] == expected[f"split{split}"][video_id]
        assert row["path"] == str(root / "UCF-101" / class_name / f"{video_id}.avi")


def test_ucf101_label_comes_from_class_index(ucf101_root):
    root, _ = ucf101_root

    rows = _by_id(layouts.read_ucf101(str(root), split=1))

    # classInd.txt lists PlayingCello first, although it sorts last.
    assert rows["v_PlayingCello_g01_c01"]["label"] == 0
    assert rows["v_ApplyEyeMakeup_g01_c01"]["label"] == 1


def test_ucf101_mismatched_label_raises(ucf101_root, tmp_path):
    root, _ = ucf101_root
    copy = tmp_path / "ucf"
    shutil.copytree(root / "ucfTrainTestlist", copy / "ucfTrainTestlist")
    (copy / "UCF-101").mkdir()
    (copy / "ucfTrainTestlist" / "trainlist01.txt").write_text("Biking/v_Biking_g01_c01.avi 1\n")

    with pytest.raises(ValueError, match="label 1 disagrees"):
        layouts.read_ucf101(str(copy), split=1)


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("UCF-101", "UCF101 video folder not found"),
        ("ucfTrainTestlist/testlist01.txt", "UCF101 split file not found.*testlist01.txt"),
        ("ucfTrainTestlist/classInd.txt", "UCF101 class index not found"),
    ],
)
def test_ucf101_missing_parts_raise(ucf101_root, tmp_path, remove, message):
    root, _ = ucf101_root
    copy = tmp_path / "ucf"
    shutil.copytree(root, copy)
    target = copy / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()

    with pytest.raises(ValueError, match=message) as error:
        layouts.read_ucf101(str(copy), split=1)

    assert "expected layout" in str(error.value)


def test_ucf101_rejects_split_four(ucf101_root):
    root, _ = ucf101_root

    with pytest.raises(ValueError, match="splits 1, 2 and 3"):
        layouts.read_ucf101(str(root), split=4)


def test_hmdb51_tags_and_sorted_classes(hmdb51_root):
    root, expected = hmdb51_root

    rows = _by_id(layouts.read_hmdb51(str(root), split=1))

    assert set(rows) == set(expected["split1"])
    for video_id, row in rows.items():
        class_name = video_id.split("/")[0]
        assert row["label"] == expected["classes"][class_name]
        assert row["split"] == expected["split1"][video_id]
        assert row["path"] == str(root / class_name / f"{video_id.split('/')[1]}.avi")
    assert not any("_clip_2_" in video_id for video_id in rows), "tag 0 videos must be left out"


def test_hmdb51_missing_split_folder_raises(tmp_path):
    (tmp_path / "brush_hair").mkdir()

    with pytest.raises(ValueError, match="HMDB51 split folder not found.*testTrainMulti_7030_splits"):
        layouts.read_hmdb51(str(tmp_path), split=1)


def test_hmdb51_missing_split_number_raises(hmdb51_root):
    root, _ = hmdb51_root

    with pytest.raises(ValueError, match="no HMDB51 split files"):
        layouts.read_hmdb51(str(root), split=3)


def test_ssv2_templates_to_classes(ssv2_root):
    root, expected = ssv2_root

    rows = _by_id(layouts.read_ssv2(str(root)))

    assert set(rows) == set(expected["videos"])
    for video_id, (label, split) in expected["videos"].items():
        assert rows[video_id]["label"] == label
        assert rows[video_id]["split"] == split
        assert rows[video_id]["path"] == str(root / "20bn-something-something-v2" / f"{video_id}.webm")
    assert rows["101"]["label_name"] == "Pushing something from left to right"


def test_ssv2_legacy_file_names(tmp_path):
    expected = make_ssv2(tmp_path, num_frames=4, legacy_names=True)

    rows = _by_id(layouts.read_ssv2(str(tmp_path)))

    assert {video_id: row["label"] for video_id, row in rows.items()} == {
        video_id: label for video_id, (label, _) in expected["videos"].items()
    }


def test_ssv2_unknown_template_raises(ssv2_root, tmp_path):
    root, _ = ssv2_root
    copy = tmp_path / "ssv2"
    shutil.copytree(root, copy)
    train = json.loads((copy / "labels" / "train.json").read_text())
    train[0]["template"] = "Spinning [something] around"
    (copy / "labels" / "train.json").write_text(json.dumps(train))

    with pytest.raises(ValueError, match="'Spinning something around' is not in"):
        layouts.read_ssv2(str(copy))


def test_ssv2_missing_annotation_raises(ssv2_root, tmp_path):
    root, _ = ssv2_root
    copy = tmp_path / "ssv2"
    shutil.copytree(root, copy)
    (copy / "labels" / "validation.json").unlink()

    with pytest.raises(ValueError, match="validation.json not found"):
        layouts.read_ssv2(str(copy))


def test_folder_layout_labels_and_stable_split(tmp_path):
    expected = make_folder_dataset(tmp_path, classes=("walk", "jump", "clap"), per_class=6, num_frames=4)
    (tmp_path / "notes.txt").write_text("not a video")

    first = layouts.read_folder(str(tmp_path), val_fraction=0.5)
    second = layouts.read_folder(str(tmp_path), val_fraction=0.5)

    assert len(first) == len(expected["videos"])
    assert dict(zip(first["label_name"], first["label"])) == expected["classes"]
    assert first["split"].tolist() == second["split"].tolist()
    assert set(first["split"]) == {"train", "val"}
    assert first.loc[first["video_id"] == "clap/clap_0", "label"].item() == 0


def test_folder_without_classes_raises(tmp_path):
    with pytest.raises(ValueError, match="no class folders"):
        layouts.read_folder(str(tmp_path))


def test_video_list_fills_ids_and_labels(tmp_path):
    (tmp_path / "list.csv").write_text("path,split,label_name\nclips/b.mp4,train,run\n/abs/a.avi,val,jump\n")

    table = layouts.read_video_list(str(tmp_path / "list.csv"))

    assert table["video_id"].tolist() == ["b", "a"]
    assert table["label"].tolist() == [1, 0]
    assert table["path"].tolist() == [str(tmp_path / "clips" / "b.mp4"), "/abs/a.avi"]


def test_video_list_missing_columns_raises(tmp_path):
    (tmp_path / "list.csv").write_text("path\na.avi\n")

    with pytest.raises(ValueError, match=r"lacks column\(s\) \['split', 'label or label_name'\]"):
        layouts.read_video_list(str(tmp_path / "list.csv"))
