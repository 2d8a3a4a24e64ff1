"""Evaluation: multi-view aggregation, accuracy and confusion matrices, checked by hand."""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from stsep import build_model
from stsep.config import load_config
from stsep.data import ClipConfig, UnreadableFractionError, decode_clip, read_manifest, to_model_input, write_manifest
from stsep.evaluation.activation_maps import (
    compute_activation_maps,
    save_activation_maps,
    stage_spike_rate_map,
    temporal_branch_map,
)
from stsep.evaluation.batches import Skips, iter_view_batches
from stsep.evaluation.loading import load_trained_model
from stsep.evaluation.metrics import (
    ViewSpec,
    aggregate_views,
    classification_result,
    confusion_matrix,
    parse_views,
    per_class_accuracy,
    topk_accuracy,
)
from stsep.evaluation.runner import EvaluationSettings, evaluate_checkpoint, log_evaluation, write_evaluation_artifacts
from stsep.profile import count_operations, record_firing_rates
from stsep.training.checkpoint import write_checkpoint
from stsep.training.loop import model_options

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_aggregate_logits_mean_per_video():
    # Views of videos "a" and "b" interleaved, as a distributed loader may return them.
    logits = torch.tensor([[1.0, 0.0, 2.0], [4.0, 1.0, 0.0], [3.0, 3.0, 3.0], [0.0, 5.0, 1.0]])
    video_ids = ["a", "b", "a", "b"]
    labels = [2, 1, 2, 1]

    ids, scores, video_labels = aggregate_views(logits, video_ids, labels)

    assert ids == ["a", "b"]
    assert scores[0].tolist() == pytest.approx([2.0, 1.5, 2.5])
    assert scores[1].tolist() == pytest.approx([2.0, 3.0, 0.5])
    assert video_labels.tolist() == [2, 1]


def test_aggregate_softmax_mean_per_video():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])

    _, scores, _ = aggregate_views(logits, ["v", "v"], [0, 0], mode="softmax")

    p = math.exp(2.0) / (math.exp(2.0) + 1.0)
    assert scores[0].tolist() == pytest.approx([(0.5 + p) / 2, (0.5 + 1 - p) / 2])


def test_aggregate_rejects_label_mismatch():
    with pytest.raises(ValueError, match="different labels"):
        aggregate_views(torch.zeros(2, 3), ["v", "v"], [0, 1])


def test_aggregate_rejects_unknown_mode():
    with pytest.raises(ValueError, match="logits, softmax"):
        aggregate_views(torch.zeros(1, 3), ["v"], [0], mode="max")


def test_topk_accuracy_by_hand():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: top-1 hit
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 1: rank 5 -> top-5 hit only
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # label 0: rank 6 -> miss
            [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],  # label 2: rank 4 (ties ranked by index) -> top-5 hit
        ]
    )
    labels = torch.tensor([0, 1, 0, 2])

    accuracy = topk_accuracy(scores, labels, ks=(1, 5))

    assert accuracy[1] == pytest.approx(1 / 4)
    assert accuracy[5] == pytest.approx(3 / 4)


def test_topk_larger_than_classes_counts_all():
    assert topk_accuracy(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), ks=(5,))[5] == 1.0


def test_confusion_and_per_class_accuracy():
    predictions = torch.tensor([0, 1, 1, 2, 0])
    labels = torch.tensor([0, 1, 0, 2, 0])

    matrix = confusion_matrix(predictions, labels, num_classes=4)

    expected = np.zeros((4, 4), dtype=int)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 2] = 2, 1, 1, 1
    np.testing.assert_array_equal(matrix, expected)
    class_accuracy = per_class_accuracy(matrix)
    assert class_accuracy[:3].tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    assert math.isnan(class_accuracy[3])


def test_classification_result_rejects_wrong_width():
    with pytest.raises(ValueError, match="num_classes is 5"):
        classification_result(torch.zeros(2, 3), torch.tensor([0, 1]), ["a", "b"], num_classes=5)


@pytest.mark.parametrize(("text", "clips", "crops"), [("1x1", 1, 1), ("4x3", 4, 3), (" 2X1 ", 2, 1)])
def test_parse_views(text, clips, crops):
    views = parse_views(text)

    assert (views.num_clips, views.num_crops) == (clips, crops)
    assert views.num_views == clips * crops


@pytest.mark.parametrize("text", ["3", "0x1", "axb", "1x2x3", "-1x2"])
def test_parse_views_rejects(text):
    with pytest.raises(ValueError, match="clips"):
        parse_views(text)


# ------------------------------------------------------------ checkpoint fixtures

NUM_FRAMES = 4
CROP_SIZE = 32
SHORT_SIDE = 40
CLASS_NAMES = ("left_to_right", "right_to_left")
VIDEOS_PER_CLASS_AND_SPLIT = 2


def write_moving_square(path: Path, *, direction: int, offset: int) -> None:
    """Write a 16-frame MPEG-4 AVI of a bright square moving left (-1) or right (+1)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=8)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for index in range(16):
        frame = np.full((48, 64, 3), 30 + 10 * offset, dtype=np.uint8)
        left = 4 + 3 * index if direction > 0 else 48 - 3 * index
        frame[12 + offset : 28 + offset, left : left + 12] = 230
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def write_test_manifest(directory: Path, *, dataset: str = "folder") -> Path:
    """Write two classes x (train, test) x two videos and their manifest; return the manifest path."""
    rows = []
    for label, name in enumerate(CLASS_NAMES):
        for split in ("train", "test"):
            for offset in range(VIDEOS_PER_CLASS_AND_SPLIT):
                video_id = f"{name}_{split}_{offset}"
                path = directory / f"{video_id}.avi"
                write_moving_square(path, direction=1 if label == 0 else -1, offset=offset + (2 if split == "test" else 0))
                rows.append(
                    {"video_id": video_id, "path": str(path), "label": label, "label_name": name, "split": split,
                     "num_frames": 16, "fps": 8.0, "width": 64, "height": 48}
                )
    manifest = directory / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), str(manifest), dataset=dataset)
    return manifest


def experiment_config(manifest: Path, *, dataset: str = "folder", split: int = 1):
    """A demo config with tiny clips, a tiny width and a low threshold so untrained stages fire."""
    return load_config(
        "demo",
        overrides=[
            f"data.dataset={dataset}", f"data.root={manifest.parent}", f"data.split={split}",
            f"data.manifest_path={manifest}",
            f"data.num_frames={NUM_FRAMES}", f"data.crop_size={CROP_SIZE}", f"data.short_side={SHORT_SIDE}",
            "model.width=0.125", "model.v_threshold=0.2",
        ],
    )


def write_tiny_checkpoint(directory: Path, *, variant: str, manifest: Path, seed: int = 0, run_id: str | None = None,
                          dataset: str = "folder", split: int = 1) -> tuple[Path, torch.nn.Module]:
    """Build a tiny model, save it in the training checkpoint format and return (directory, model)."""
    config = experiment_config(manifest, dataset=dataset, split=split)
    torch.manual_seed(seed)
    model = build_model(variant, len(CLASS_NAMES), depth=config.model.depth, width=config.model.width, **model_options(config))
    state = {
        "model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {}, "epoch": 3,
        "best_val_top1": 0.5, "config": config.to_dict(), "variant": variant, "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES), "mlflow_run_id": run_id,
    }
    write_checkpoint(state, directory=directory)
    return directory, model.eval()


def clip_config(views: ViewSpec) -> ClipConfig:
    return ClipConfig(num_frames=NUM_FRAMES, crop_size=CROP_SIZE, short_side=SHORT_SIDE, flip_allowed=False,
                      num_clips=views.num_clips, num_crops=views.num_crops)


@torch.no_grad()
def hand_video_logits(model, manifest: Path, views: ViewSpec, *, split: str = "test") -> dict[str, torch.Tensor]:
    """Score each view of each video on its own (decode_clip, batch of one) and average per video."""
    rows = read_manifest(str(manifest))
    rows = rows[rows["split"] == split]
    clip = clip_config(views)
    averages = {}
    for row in rows.to_dict("records"):
        view_logits = [
            model(to_model_input(torch.as_tensor(decode_clip(row, clip=clip, training=False, view=view))[None]))[0]
            for view in range(views.num_views)
        ]
        averages[row["video_id"]] = torch.stack(view_logits).mean(dim=0)
    return averages


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation-data")
    manifest = write_test_manifest(root)
    checkpoint, model = write_tiny_checkpoint(root / "ckpt-stsep", variant="stsep-s34-state", manifest=manifest)
    return manifest, checkpoint, model


@pytest.fixture(scope="module")
def hand_logits(tiny_data):
    manifest, _, model = tiny_data
    return {text: hand_video_logits(model, manifest, parse_views(text)) for text in ("1x1", "2x2")}


@pytest.mark.parametrize("views_text", ["1x1", "2x2"])
def test_multiview_logits_equal_hand_average(tiny_data, hand_logits, views_text):
    _, checkpoint, _ = tiny_data
    views = parse_views(views_text)
    hand = hand_logits[views_text]
    loaded = load_trained_model(str(checkpoint))

    report = evaluate_checkpoint(loaded, EvaluationSettings(views=views, engine="local", batch_size=3))

    result = report.result
    assert sorted(result.video_ids) == sorted(hand)
    for video_id, row in zip(result.video_ids, result.scores):
        torch.testing.assert_close(torch.from_numpy(row), hand[video_id], rtol=1e-4, atol=1e-5)
    hand_top1 = statistics.mean(
        float(int(hand[video_id].argmax()) == int(label)) for video_id, label in zip(result.video_ids, result.labels)
    )
    assert result.top1 == pytest.approx(hand_top1)
    assert result.top5 == pytest.approx(1.0)
    assert result.num_videos == len(CLASS_NAMES) * VIDEOS_PER_CLASS_AND_SPLIT
    assert report.split == "test"


def test_view_batches_carry_every_view(tiny_data):
    manifest, _, _ = tiny_data
    views = parse_views("2x2")

    batches = list(iter_view_batches(str(manifest), split="test", clip=clip_config(views), batch_size=3, engine="local"))

    assert [len(batch["video_id"]) for batch in batches] == [3, 3, 3, 3, 3, 1]
    assert batches[0]["clip"].shape == (3, NUM_FRAMES, CROP_SIZE, CROP_SIZE, 3)
    assert batches[0]["clip"].dtype == np.uint8
    all_views = [int(view) for batch in batches for view in batch["view"]]
    assert all_views == [0, 1, 2, 3] * (len(CLASS_NAMES) * VIDEOS_PER_CLASS_AND_SPLIT)


def test_softmax_aggregation_by_hand(tiny_data, hand_logits):
    _, checkpoint, model = tiny_data
    manifest = tiny_data[0]
    views = parse_views("2x2")
    loaded = load_trained_model(str(checkpoint))

    report = evaluate_checkpoint(loaded, EvaluationSettings(views=views, engine="local", aggregation="softmax", batch_size=8))

    rows = read_manifest(str(manifest))
    row = rows[(rows["split"] == "test")].iloc[0].to_dict()
    with torch.no_grad():
        probabilities = [
            model(to_model_input(torch.as_tensor(decode_clip(row, clip=clip_config(views), training=False, view=view))[None]))[0].softmax(0)
            for view in range(views.num_views)
        ]
    index = report.result.video_ids.index(row["video_id"])
    torch.testing.assert_close(torch.from_numpy(report.result.scores[index]), torch.stack(probabilities).mean(0), rtol=1e-4, atol=1e-6)


def test_multiview_differs_from_first_view(hand_logits):
    single, multi = hand_logits["1x1"], hand_logits["2x2"]

    # Averaging four views must change some logits, or the test above could not tell them apart.
    assert any(not torch.allclose(single[key], multi[key]) for key in single)


def test_checkpoint_rebuilds_same_model(tiny_data):
    _, checkpoint, model = tiny_data

    loaded = load_trained_model(str(checkpoint))

    assert loaded.variant == "stsep-s34-state"
    assert loaded.class_names == CLASS_NAMES
    assert loaded.epoch == 3
    for (name, expected), actual in zip(model.state_dict().items(), loaded.model.state_dict().values()):
        torch.testing.assert_close(actual, expected, msg=name)


def test_checkpoint_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        load_trained_model(str(tmp_path / "nowhere"))


def test_energy_metrics_match_hand_count(tiny_data):
    manifest, checkpoint, _ = tiny_data
    loaded = load_trained_model(str(checkpoint))
    views = parse_views("1x1")

    report = evaluate_checkpoint(loaded, EvaluationSettings(views=views, engine="local", profile=True))

    # Rates by hand: spikes over neuron time steps of every test clip, through the same recorder.
    rows = read_manifest(str(manifest))
    clips = [decode_clip(row, clip=clip_config(views), training=False) for row in rows[rows["split"] == "test"].to_dict("records")]
    with torch.no_grad(), record_firing_rates(loaded.model) as recorder:
        loaded.model(to_model_input(torch.as_tensor(np.stack(clips))))
    rates = recorder.rates()
    ops = count_operations(loaded.model, num_frames=NUM_FRAMES, height=CROP_SIZE, width=CROP_SIZE, firing_rates=rates)
    expected_mj = (ops["macs"] * 4.6 + ops["sops"] * 0.9) * 1e-9
    metrics = report.metrics()
    assert metrics["energy_mj"] == pytest.approx(expected_mj, rel=1e-6)
    assert metrics["sops"] == pytest.approx(ops["sops"], rel=1e-6)
    assert metrics["macs"] == pytest.approx(ops["macs"])
    for group, rate in rates.items():
        assert metrics[f"eval_firing_rate_{group}"] == pytest.approx(rate, rel=1e-6)
    assert metrics["eval_firing_rate_stage4"] > 0
    assert metrics["eval_firing_rate_mean"] == pytest.approx(statistics.mean(rates.values()))


def test_energy_logged_to_run(tiny_data, tmp_path):
    _, checkpoint, _ = tiny_data
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("energy", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    loaded = load_trained_model(str(checkpoint))
    report = evaluate_checkpoint(loaded, EvaluationSettings(views=parse_views("1x1"), engine="local", profile=True))

    log_evaluation(client, run_id, report, write_evaluation_artifacts(report, tmp_path / "out")[0].parent)

    logged = client.get_run(run_id).data.metrics
    assert logged["energy_mj"] == pytest.approx(report.energy.energy_mj)
    assert logged["sops"] == pytest.approx(report.energy.sops)
    assert logged["test_top1_1x1"] == pytest.approx(report.result.top1)
    artifacts = {item.path for item in client.list_artifacts(run_id, "evaluation/test_1x1")}
    assert "evaluation/test_1x1/confusion_matrix.png" in artifacts
    assert "evaluation/test_1x1/per_class_accuracy.csv" in artifacts


# ---------------------------------------------------------------- activation maps


def test_stage_map_is_channel_mean(tiny_data):
    _, _, model = tiny_data
    clip = np.random.default_rng(0).integers(0, 256, (NUM_FRAMES, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    clip_input = to_model_input(torch.as_tensor(clip)[None])
    captured = {}
    handle = model.stages[2].register_forward_hook(lambda _module, _inputs, output: captured.update(out=output))
    with torch.no_grad():
        model(clip_input)
    handle.remove()

    rate_map = stage_spike_rate_map(model, clip_input, stage=3)

    expected = captured["out"][:, 0].mean(dim=1)  # [T, 1, C, h, w] -> [T, h, w]
    torch.testing.assert_close(rate_map, expected)
    assert float(rate_map.max()) > 0


def test_temporal_map_zero_at_first_step(tiny_data):
    manifest, _, model = tiny_data
    row = read_manifest(str(manifest)).iloc[0].to_dict()
    moving = decode_clip(row, clip=clip_config(parse_views("1x1")), training=False)

    moving_map = temporal_branch_map(model, to_model_input(torch.as_tensor(moving)[None]), stage=4)

    # D[0] = 0, so the first time step matches the branch's response to no change.
    assert moving_map.shape[0] == NUM_FRAMES
    assert float(moving_map[0].abs().max()) == 0.0
    assert float(moving_map[1:].max()) > 0.0


def test_temporal_map_zero_without_motion(tiny_data, tmp_path):
    manifest, _, _ = tiny_data
    # Every neuron is non-stateful, so still frames give the same spikes at every time step.
    _, model = write_tiny_checkpoint(tmp_path / "all-stsep", variant="stsep-s1234-nostate", manifest=manifest)
    row = read_manifest(str(manifest)).iloc[0].to_dict()
    moving = decode_clip(row, clip=clip_config(parse_views("1x1")), training=False)
    still = np.repeat(moving[:1], NUM_FRAMES, axis=0)
    # Non-zero BN offsets, as in a trained model, must not leak into the map.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.bias, std=0.5)

    still_map = temporal_branch_map(model, to_model_input(torch.as_tensor(still)[None]), stage=2)
    moving_map = temporal_branch_map(model, to_model_input(torch.as_tensor(moving)[None]), stage=2)

    assert float(still_map.abs().max()) == 0.0
    assert float(moving_map.max()) > 0.0


def test_temporal_map_absent_in_plain_stage(tiny_data):
    _, _, model = tiny_data

    assert temporal_branch_map(model, torch.zeros(1, NUM_FRAMES, 3, CROP_SIZE, CROP_SIZE), stage=1) is None


def test_activation_maps_two_models(tiny_data, tmp_path):
    manifest, _, stsep_model = tiny_data
    _, vanilla = write_tiny_checkpoint(tmp_path / "vanilla", variant="vanilla", manifest=manifest, seed=1)
    row = read_manifest(str(manifest)).iloc[0].to_dict()
    clip = decode_clip(row, clip=clip_config(parse_views("1x1")), training=False)

    maps = compute_activation_maps(
        {"vanilla": vanilla, "stsep-s34-state": stsep_model}, clip, stage=3, to_input=to_model_input, video_id="v0"
    )
    path = save_activation_maps(maps, tmp_path / "maps.png")

    assert list(maps.maps) == [
        "vanilla: stage 3 spike rate", "stsep-s34-state: stage 3 mean output", "stsep-s34-state: stage 3 temporal branch",
    ]
    assert all(values.shape == (NUM_FRAMES, CROP_SIZE, CROP_SIZE) for values in maps.maps.values())
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300


# ------------------------------------------------------------------ entry point


def load_evaluate_entry_point():
    # The entry points import their shared helpers from the pipelines directory.
    if str(REPO_ROOT / "pipelines") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "pipelines"))
    spec = importlib.util.spec_from_file_location("evaluate_entry_point", REPO_ROOT / "pipelines" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tracking_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("evaluation", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, experiment_id


def test_evaluate_cli_from_run(tiny_data, tracking_store, tmp_path):
    manifest, checkpoint, _ = tiny_data
    uri, client, experiment_id = tracking_store
    run_id = client.create_run(experiment_id, run_name="stsep-s34-state-seed0").info.run_id
    client.log_artifact(run_id, str(checkpoint / "checkpoint.pt"), artifact_path="checkpoints/best")
    vanilla, _ = write_tiny_checkpoint(tmp_path / "vanilla", variant="vanilla", manifest=manifest, seed=1)
    expected = evaluate_checkpoint(load_trained_model(str(checkpoint)), EvaluationSettings(views=parse_views("2x2"), engine="local"))

    result = subprocess.run(
        [sys.executable, "pipelines/evaluate.py", f"runs:/{run_id}", "--views", "2x2", "--engine", "local",
         "--retrieval", "--profile", "--activation-maps", "--compare", str(vanilla), "--num-videos", "1",
         "--tracking-uri", uri, "--output", str(tmp_path / "out")],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"| stsep-s34-state | test | 2x2 | 4 | {expected.result.top1:.4f} |" in result.stdout
    metrics = client.get_run(run_id).data.metrics
    assert metrics["test_top1_2x2"] == pytest.approx(expected.result.top1)
    assert metrics["test_top5_2x2"] == pytest.approx(expected.result.top5)
    assert {"recall_at_1", "recall_at_5", "recall_at_10", "recall_at_20", "energy_mj", "sops"} <= set(metrics)
    artifacts = {item.path for item in client.list_artifacts(run_id, "evaluation/test_2x2")}
    assert {
        "evaluation/test_2x2/confusion_matrix.csv", "evaluation/test_2x2/confusion_matrix.png",
        "evaluation/test_2x2/per_class_accuracy.csv", "evaluation/test_2x2/predictions.csv",
        "evaluation/test_2x2/metrics.json", "evaluation/test_2x2/activation_maps",
    } <= artifacts
    maps = [item.path for item in client.list_artifacts(run_id, "evaluation/test_2x2/activation_maps")]
    assert maps == ["evaluation/test_2x2/activation_maps/stage3_left_to_right_test_0.png"]


def test_evaluate_all_splits_mean(tiny_data, tracking_store, tmp_path, capsys):
    manifest, _, _ = tiny_data
    uri, client, experiment_id = tracking_store
    checkpoints, run_ids = [], []
    for split in (1, 2, 3):
        run_id = client.create_run(experiment_id, run_name=f"vanilla-split{split}").info.run_id
        directory, _ = write_tiny_checkpoint(
            tmp_path / f"split{split}", variant="vanilla", manifest=manifest, seed=split, run_id=run_id,
            dataset="ucf101", split=split,
        )
        checkpoints.append(str(directory))
        run_ids.append(run_id)
    entry_point = load_evaluate_entry_point()

    status = entry_point.main([*checkpoints, "--all-splits", "--views", "1x1", "--engine", "local",
                               "--tracking-uri", uri, "--output", str(tmp_path / "out")])

    assert status == 0
    top1 = [client.get_run(run_id).data.metrics["test_top1_1x1"] for run_id in run_ids]
    for run_id in run_ids:
        logged = client.get_run(run_id).data.metrics
        assert logged["test_top1_1x1_mean_over_splits"] == pytest.approx(statistics.mean(top1))
    assert f"mean over splits 1-3 (1x1 views): top-1 {statistics.mean(top1):.4f}" in capsys.readouterr().out


def test_evaluate_all_splits_rejects_wrong_dataset(tiny_data, tmp_path, capsys):
    manifest, checkpoint, _ = tiny_data
    entry_point = load_evaluate_entry_point()

    status = entry_point.main([str(checkpoint)] * 3 + ["--all-splits", "--no-log", "--engine", "local"])

    assert status == 2
    assert "--all-splits needs checkpoints of one of ucf101, hmdb51" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_engine_matches_hand_average(tiny_data, hand_logits):
    ray = pytest.importorskip("ray")
    _, checkpoint, _ = tiny_data
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        report = evaluate_checkpoint(
            load_trained_model(str(checkpoint)), EvaluationSettings(views=parse_views("2x2"), engine="ray", batch_size=4)
        )
    finally:
        ray.shutdown()

    hand = hand_logits["2x2"]
    assert report.unreadable == ()
    assert sorted(report.result.video_ids) == sorted(hand)
    for video_id, row in zip(report.result.video_ids, report.result.scores):
        torch.testing.assert_close(torch.from_numpy(row), hand[video_id], rtol=1e-4, atol=1e-5)


def test_local_engine_skips_unreadable(tiny_data, tmp_path, caplog):
    manifest, _, _ = tiny_data
    table = read_manifest(str(manifest))
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    first_test = table.index[table["split"] == "test"][0]
    table.loc[first_test, "path"] = str(broken)
    patched = tmp_path / "manifest.parquet"
    write_manifest(table, str(patched))
    skips = Skips()
    clip = replace(clip_config(parse_views("1x1")), max_unreadable_fraction=0.25)

    batches = list(iter_view_batches(str(patched), split="test", clip=clip, batch_size=8, engine="local", skips=skips))

    assert [path for path, _ in skips.skipped] == [str(broken)]
    assert sum(len(batch["video_id"]) for batch in batches) == len(CLASS_NAMES) * VIDEOS_PER_CLASS_AND_SPLIT - 1
    assert str(broken) in caplog.text
    with pytest.raises(UnreadableFractionError, match="max_unreadable_fraction=0.2"):
        list(iter_view_batches(str(patched), split="test", clip=replace(clip, max_unreadable_fraction=0.2),
                               batch_size=8, engine="local"))
