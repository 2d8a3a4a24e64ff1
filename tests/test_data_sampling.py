"""Tests of clip sampling, spatial transforms, model input and the temporal probe windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stsep.data.clips import ClipConfig, decode_clip, decode_views
from stsep.data.decode import read_frames
from stsep.data.probes import ProbeSettings, arrow_rows, speed_rows, window_spans
from stsep.data.sampling import clip_indices, segment_indices, stride_indices
from stsep.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    horizontal_flip,
    random_scale_crop,
    resize_short_side,
    spatial_crop,
    to_model_input,
)
from tests.plugins.videos import numbered_frames, read_frame_number, write_video


def test_training_segments_pick_one_frame_each():
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = segment_indices(start_frame=10, end_frame=50, num_frames=8, training=True, rng=rng)

        assert indices.shape == (8,)
        assert ((indices - 10) // 5).tolist() == list(range(8)), indices


def test_eval_segments_are_centres_and_clip_offsets():
    centres = segment_indices(start_frame=0, end_frame=40, num_frames=4, training=False)
    first = segment_indices(start_frame=0, end_frame=40, num_frames=4, training=False, clip_index=0, num_clips=2)
    second = segment_indices(start_frame=0, end_frame=40, num_frames=4, training=False, clip_index=1, num_clips=2)

    assert centres.tolist() == [5, 15, 25, 35]
    assert first.tolist() == [2, 12, 22, 32]
    assert second.tolist() == [7, 17, 27, 37]


def test_short_span_repeats_frames():
    indices = segment_indices(start_frame=0, end_frame=3, num_frames=8, training=False)

    assert indices.min() >= 0
    assert indices.max() <= 2
    assert sorted(indices.tolist()) == indices.tolist()


def test_stride_sampling_spacing():
    rng = np.random.default_rng(1)
    for speed in (1, 2, 4):
        indices = stride_indices(start_frame=8, end_frame=40, num_frames=8, speed=speed, training=True, rng=rng)

        assert np.all(np.diff(indices) == speed)
        assert indices[0] >= 8
        assert indices[-1] < 40


def test_stride_sampling_rejects_short_span():
    with pytest.raises(ValueError, match="needs 29 frames.*has 16"):
        stride_indices(start_frame=0, end_frame=16, num_frames=8, speed=4, training=False)


def test_reverse_flips_order():
    row = dict(start_frame=0, end_frame=16, speed=None, reverse=False)

    forward = clip_indices(row, num_frames=8, training=False)
    backward = clip_indices(dict(row, reverse=True), num_frames=8, training=False)

    assert backward.tolist() == forward[::-1].tolist()


def test_resize_short_side_landscape_and_portrait():
    landscape = np.zeros((2, 48, 64, 3), dtype=np.uint8)
    portrait = np.zeros((2, 64, 48, 3), dtype=np.uint8)

    assert resize_short_side(landscape, short_side=24).shape == (2, 24, 32, 3)
    assert resize_short_side(portrait, short_side=24).shape == (2, 32, 24, 3)


def test_three_crops_cover_left_centre_right():
    frames = np.tile(np.arange(64, dtype=np.uint8)[None, None, :, None], (1, 32, 1, 3))  # column index as value

    crops = [spatial_crop(frames, crop_size=32, crop_index=k, num_crops=3) for k in range(3)]

    assert [int(crop[0, 0, 0, 0]) for crop in crops] == [0, 16, 32]
    assert all(crop.shape == (1, 32, 32, 3) for crop in crops)


def test_random_scale_crop_shape_and_content():
    frames = numbered_frames(4, height=96, width=128)
    rng = np.random.default_rng(2)

    crop = random_scale_crop(frames, crop_size=32, scale_range=(0.5, 1.0), rng=rng)

    assert crop.shape == (4, 32, 32, 3)
    assert crop.dtype == np.uint8


def test_flip_mirrors_columns():
    frames = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)

    assert np.array_equal(horizontal_flip(frames)[:, :, 0], frames[:, :, 2])


def test_to_model_input_layout_and_values():
    clips = torch.zeros(2, 4, 8, 6, 3, dtype=torch.uint8)
    clips[..., 0] = 255

    x = to_model_input(clips)

    assert x.shape == (2, 4, 3, 8, 6)
    assert x.dtype == torch.float32
    assert torch.allclose(x[:, :, 0], torch.tensor((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]))
    assert torch.allclose(x[:, :, 1], torch.tensor(-IMAGENET_MEAN[1] / IMAGENET_STD[1]))


def test_to_model_input_rejects_float():
    with pytest.raises(ValueError, match=r"uint8 \[B, T, H, W, 3\]"):
        to_model_input(torch.zeros(1, 2, 4, 4, 3))


def test_clip_config_validates():
    with pytest.raises(ValueError, match="crop_size <= short_side"):
        ClipConfig(crop_size=128, short_side=112)
    with pytest.raises(ValueError, match="scale_range"):
        ClipConfig(scale_range=(0.0, 1.0))


def test_flip_policy_per_dataset():
    assert ClipConfig.for_dataset("ssv2").flip_allowed is False
    assert ClipConfig.for_dataset("arrow").flip_allowed is False
    assert ClipConfig.for_dataset("ucf101").flip_allowed is True


# ------------------------------------------------------------ probe windows


def _sources(num_frames: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        dict(
            video_id=[f"v{i}" for i in range(len(num_frames))],
            path=[f"/videos/v{i}.mp4" for i in range(len(num_frames))],
            label=0,
            label_name="",
            split="train",
            num_frames=num_frames,
            fps=25.0,
            readable=True,
            error="",
        )
    )


@pytest.mark.parametrize("num_frames", [40, 100, 132, 250, 795])
def test_train_and_test_windows_never_share_frames(num_frames):
    settings = ProbeSettings(window=16)

    spans = window_spans(num_frames, settings=settings)

    train_frames = {f for start, end in spans["train"] for f in range(start, end)}
    test_frames = {f for start, end in spans["test"] for f in range(start, end)}
    assert not train_frames & test_frames
    assert all(end - start == 16 for start, end in spans["train"] + spans["test"])
    assert all(end <= num_frames for _, end in spans["train"] + spans["test"])
    if spans["test"]:
        assert spans["test"][0][0] - spans["train"][-1][1] >= settings.gap_frames
    windows = sorted(spans["train"] + spans["test"])
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:])), "windows overlap"


def test_arrow_rows_are_balanced_pairs():
    rows = arrow_rows(_sources([100, 60]), settings=ProbeSettings(window=16))

    assert (rows["label"] == 0).sum() == (rows["label"] == 1).sum()
    for (source, start, end), group in rows.groupby(["path", "start_frame", "end_frame"]):
        assert sorted(group["label"]) == [0, 1], (source, start)
        assert group["split"].nunique() == 1
        assert group.set_index("label")["reverse"].to_dict() == {0: False, 1: True}
    assert set(rows["split"]) == {"train", "test"}


def test_speed_rows_have_three_strides():
    rows = speed_rows(_sources([200]), settings=ProbeSettings(window=32))

    per_window = rows.groupby("start_frame")["speed"].apply(lambda s: sorted(s.astype(int)))
    assert all(speeds == [1, 2, 4] for speeds in per_window)
    assert dict(zip(rows["speed"].astype(int), rows["label"])) == {1: 0, 2: 1, 4: 2}


def test_short_source_gives_no_windows():
    rows = arrow_rows(_sources([10, 100]), settings=ProbeSettings(window=16))

    assert set(rows["path"]) == {"/videos/v1.mp4"}


def test_reversed_clip_is_forward_clip_backwards(tmp_path):
    path = str(write_video(tmp_path / "source.mp4", numbered_frames(40)))
    sources = _sources([40]).assign(path=path, width=64, height=48)
    rows = arrow_rows(sources, settings=ProbeSettings(window=16)).to_dict("records")
    forward = next(r for r in rows if r["split"] == "train" and not r["reverse"])
    backward = next(r for r in rows if r["reverse"] and r["start_frame"] == forward["start_frame"])
    clip = ClipConfig(num_frames=8, crop_size=48, short_side=48, flip_allowed=False)

    forward_clip = decode_clip(forward, clip=clip, training=False)
    backward_clip = decode_clip(backward, clip=clip, training=False)
    forward_frames = read_frames(path, clip_indices(forward, num_frames=8, training=False))

    start = forward["start_frame"]
    assert [read_frame_number(frame) for frame in forward_frames] == [start + 2 * k + 1 for k in range(8)]
    assert np.array_equal(backward_clip, forward_clip[::-1])
    assert not np.array_equal(backward_clip, forward_clip)


def test_eval_views_order(tmp_path):
    path = str(write_video(tmp_path / "v.mp4", numbered_frames(40, height=48, width=96)))
    row = dict(path=path, start_frame=0, end_frame=40, speed=None, reverse=False, width=96, height=48)
    clip = ClipConfig(num_frames=4, crop_size=48, short_side=48, num_clips=2, num_crops=3)

    views = decode_views(row, clip=clip, training=False)

    assert views.shape == (6, 4, 48, 48, 3)
    for view in range(6):
        assert np.array_equal(views[view], decode_clip(row, clip=clip, training=False, view=view))
