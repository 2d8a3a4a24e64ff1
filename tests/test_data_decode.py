"""Tests of frame decoding: frame accuracy per codec, damaged files, the decoding child process."""

from __future__ import annotations

import numpy as np
import pytest

from stsep.data.decode import VideoUnreadableError, probe_video, read_frames
from stsep.data.safe_decode import DecodeProcess
from stsep.data.sampling import segment_indices
from tests.plugins.videos import damaged_video, numbered_frames, read_frame_number, write_video

NUM_FRAMES = 40


@pytest.fixture(scope="module", params=[".avi", ".mp4", ".webm"])
def numbered_video(request, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("numbered") / f"numbered{request.param}"
    return str(write_video(path, numbered_frames(NUM_FRAMES)))


def test_probe_counts_frames(numbered_video):
    info = probe_video(numbered_video)

    assert info.num_frames == NUM_FRAMES
    assert info.declared_frames == NUM_FRAMES
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (64, 48)


@pytest.mark.parametrize("order", ["sorted", "unsorted"])
def test_frames_match_requested_indices(numbered_video, order):
    rng = np.random.default_rng(7)
    for _ in range(5):
        indices = rng.integers(0, NUM_FRAMES, size=8)
        if order == "sorted":
            indices = np.sort(indices)

        frames = read_frames(numbered_video, indices)

        assert frames.shape == (8, 48, 64, 3)
        assert frames.dtype == np.uint8
        assert [read_frame_number(frame) for frame in frames] == indices.tolist()


def test_resize_while_decoding_keeps_frames(numbered_video):
    indices = [39, 0, 17, 17, 5]

    frames = read_frames(numbered_video, indices, short_side=30, width=64, height=48)

    assert frames.shape == (5, 30, 40, 3)
    assert [read_frame_number(frame) for frame in frames] == indices


def test_index_past_end_raises(numbered_video):
    with pytest.raises(VideoUnreadableError) as error:
        read_frames(numbered_video, [0, NUM_FRAMES])

    assert error.value.reason == "index_out_of_range"
    assert error.value.path == numbered_video


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("missing", "missing"), ("empty", "empty"), ("garbage", "undecodable"), ("truncated", "undecodable")],
)
def test_damaged_file_is_unreadable(tmp_path, kind, reason):
    path = str(damaged_video(tmp_path, kind))

    with pytest.raises(VideoUnreadableError) as probe_error:
        probe_video(path)
    with pytest.raises(VideoUnreadableError) as read_error:
        read_frames(path, [0, 1])

    assert probe_error.value.reason == reason
    assert read_error.value.reason == reason
    assert path in str(read_error.value)


def test_probe_finds_real_end_of_short_file(tmp_path):
    path = str(damaged_video(tmp_path, "short"))

    info = probe_video(path)

    assert 1 <= info.num_frames < info.declared_frames
    with pytest.raises(VideoUnreadableError):
        read_frames(path, [info.declared_frames - 1])
    assert read_frame_number(read_frames(path, [0])[0]) == 0


def test_real_footage_gives_varied_frames(real_videos):
    for path in real_videos[:4]:
        info = probe_video(str(path))
        indices = segment_indices(start_frame=0, end_frame=info.num_frames, num_frames=8, training=False)

        frames = read_frames(str(path), indices, short_side=64, width=info.width, height=info.height)

        assert frames.shape[0] == 8, path.name
        assert frames.shape[3] == 3, path.name
        assert min(frames.shape[1:3]) == 64, path.name
        assert frames.std() > 5, f"{path.name}: frames are nearly constant"
        assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1, f"{path.name}: no motion"


@pytest.fixture(scope="module")
def mp4_video(tmp_path_factory) -> str:
    return str(write_video(tmp_path_factory.mktemp("mp4") / "numbered.mp4", numbered_frames(NUM_FRAMES)))


def test_decode_process_returns_frames(mp4_video):
    with DecodeProcess(timeout_s=60) as process:
        frames = process.call("stsep.data.decode:read_frames", path=mp4_video, indices=[3, 1])

    assert [read_frame_number(frame) for frame in frames] == [3, 1]


def test_decode_process_survives_hang_and_crash(tmp_path):
    good = str(write_video(tmp_path / "good.mp4", numbered_frames(8)))
    function = "tests.plugins.videos:faulty_read_frames"

    with DecodeProcess(timeout_s=20) as process:
        process.call(function, path=good, indices=[0])  # warm up: the child imports decord
        process.timeout_s = 2
        with pytest.raises(VideoUnreadableError) as hang:
            process.call(function, path=str(tmp_path / "hang.mp4"), indices=[0])
        process.timeout_s = 20
        after_hang = process.call(function, path=good, indices=[5])
        with pytest.raises(VideoUnreadableError) as crash:
            process.call(function, path=str(tmp_path / "crash.mp4"), indices=[0])
        after_crash = process.call(function, path=good, indices=[6])
        restarts = process.restarts

    assert hang.value.reason == "timeout"
    assert crash.value.reason == "crash"
    assert "exit code 3" in crash.value.detail
    assert read_frame_number(after_hang[0]) == 5
    assert read_frame_number(after_crash[0]) == 6
    assert restarts == 2


def test_decode_process_reports_child_errors(mp4_video):
    with DecodeProcess(timeout_s=60) as process:
        with pytest.raises(VideoUnreadableError) as error:
            process.call("stsep.data.decode:read_frames", path=mp4_video, indices=[])

    assert error.value.reason == "undecodable"
    assert "ValueError" in error.value.detail


def test_s3_video_bytes_decode(s3_server, s3_bucket, numbered_video):
    import boto3

    key = "videos/clip" + numbered_video[-5:].lstrip("d")
    boto3.client("s3", endpoint_url=s3_server).upload_file(numbered_video, s3_bucket, key)
    uri = f"s3://{s3_bucket}/{key}"

    info = probe_video(uri)
    frames = read_frames(uri, [9, 2])

    assert info.num_frames == NUM_FRAMES
    assert [read_frame_number(frame) for frame in frames] == [9, 2]
