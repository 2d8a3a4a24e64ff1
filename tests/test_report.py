"""Ablation report: tables and plots from MLflow runs shaped like the ablation's, checked by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from stsep.variants import parse_variant
from stsep.analysis.plots import plot_accuracy_vs_energy, plot_stagewise, plot_temporal_state
from stsep.analysis.report import find_parent_run, list_trial_runs, summarize_trials, trials_frame

REPO_ROOT = Path(__file__).resolve().parents[1]
# The entry points import stsep from the checkout, installed or not.
PIPELINE_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

SEEDS = (0, 1)
# Best validation top-1 of each variant for seeds 0 and 1.
TOP1 = {
    "vanilla": (0.50, 0.54),
    "ns1": (0.56, 0.60),
    "ns2": (0.58, 0.62),
    "ns3": (0.44, 0.48),
    "ns4": (0.20, 0.26),
    "rns1": (0.55, 0.53),
    "rns2": (0.52, 0.50),
    "rns3": (0.40, 0.36),
    "stsep-s34-state": (0.66, 0.70),
    "stsep-s34-nostate": (0.62, 0.61),
}
# Energy per clip in mJ, logged by evaluation for some variants only.
ENERGY_MJ = {"vanilla": (2.0, 2.2), "ns2": (1.5, 1.7), "stsep-s34-state": (2.5, 2.5)}
STAGES = ("stem", "stage1", "stage2", "stage3", "stage4")


@dataclass(frozen=True)
class AblationRuns:
    """Ids of an ablation created in a test store."""

    experiment_id: str
    parent_run_id: str
    child_run_ids: dict[tuple[str, int], str]


def firing_rates(variant: str, seed: int) -> dict[str, float]:
    """Per-stage firing rates that differ by variant, stage and seed."""
    base = 0.05 + 0.01 * list(TOP1).index(variant)
    return {stage: base + 0.002 * index + 0.001 * seed for index, stage in enumerate(STAGES)}


def create_ablation_runs(client: MlflowClient, experiment_name: str) -> AblationRuns:
    """Create a parent run and one child run per variant and seed, as the ablation logs them."""
    experiment_id = client.create_experiment(experiment_name)
    parent = client.create_run(experiment_id, run_name="ablation", tags={"stsep.role": "ablation"})
    children = {}
    for variant, values in TOP1.items():
        for seed, top1 in zip(SEEDS, values):
            run = client.create_run(
                experiment_id,
                run_name=f"{variant}-seed{seed}",
                tags={"mlflow.parentRunId": parent.info.run_id, "stsep.role": "trial"},
            )
            params = {
                **parse_variant(variant).to_params(),
                "dataset": "demo", "split": "1", "num_frames": 4, "seed": seed, "depth": 18, "width": 0.125,
            }
            # Two epochs: the second reaches the best top-1, the first is 0.1 lower.
            metrics = [
                Metric("val_top1", top1 - 0.1, 0, 0),
                Metric("val_top1", top1, 0, 1),
                Metric("val_top5", min(1.0, top1 + 0.3), 0, 1),
                Metric("best_val_top1", top1, 0, 1),
            ]
            metrics += [Metric(f"firing_rate_{stage}", rate, 0, 1) for stage, rate in firing_rates(variant, seed).items()]
            if variant in ENERGY_MJ:
                metrics.append(Metric("energy_mj", ENERGY_MJ[variant][seed], 0, 0))
            if variant == "vanilla":
                metrics.append(Metric("recall_at_1", 0.3 + 0.1 * seed, 0, 0))
                metrics.append(Metric("test_top1_4x3", top1 + 0.05, 0, 0))
            client.log_batch(
                run.info.run_id,
                metrics=metrics,
                params=[Param(key, str(value)) for key, value in params.items()],
            )
            client.set_terminated(run.info.run_id)
            children[(variant, seed)] = run.info.run_id
    client.set_terminated(parent.info.run_id)
    return AblationRuns(experiment_id=experiment_id, parent_run_id=parent.info.run_id, child_run_ids=children)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    runs = create_ablation_runs(client, "report-test")
    return uri, client, runs


@pytest.fixture(scope="module")
def summary(ablation):
    _, client, runs = ablation
    trials = trials_frame(list_trial_runs(client, client.get_run(runs.parent_run_id)))
    return trials, summarize_trials(trials)


def row(summary_frame: pd.DataFrame, variant: str) -> pd.Series:
    return summary_frame.set_index("variant").loc[variant]


def test_trials_one_row_per_child(summary):
    trials, _ = summary

    assert len(trials) == len(TOP1) * len(SEEDS)
    assert list(trials["variant"].drop_duplicates()) == list(TOP1)
    vanilla0 = trials[(trials["variant"] == "vanilla") & (trials["seed"] == 0)].iloc[0]
    assert vanilla0["top1"] == pytest.approx(0.50)
    assert vanilla0["firing_rate_mean"] == pytest.approx(statistics.mean(firing_rates("vanilla", 0).values()))


@pytest.mark.parametrize("variant", list(TOP1))
def test_summary_mean_std_by_hand(summary, variant):
    _, frame = summary

    values = TOP1[variant]
    assert row(frame, variant)["seeds"] == 2
    assert row(frame, variant)["top1_mean"] == pytest.approx(statistics.mean(values))
    assert row(frame, variant)["top1_std"] == pytest.approx(statistics.stdev(values))
    assert row(frame, variant)["top5_mean"] == pytest.approx(statistics.mean(min(1.0, v + 0.3) for v in values))


def test_summary_params_and_optional_metrics(summary):
    _, frame = summary

    assert row(frame, "ns2")["stage_map"] == "NNSS"
    assert row(frame, "rns1")["ns_depth"] == 0
    assert row(frame, "rns1")["rns_depth"] == 1
    assert row(frame, "stsep-s34-nostate")["temporal_state"] == "nostate"
    assert row(frame, "stsep-s34-nostate")["stsep_stages"] == "34"
    assert row(frame, "ns2")["energy_mj_mean"] == pytest.approx(1.6)
    assert pd.isna(row(frame, "ns1")["energy_mj_mean"])
    assert row(frame, "vanilla")["recall_at_1_mean"] == pytest.approx(0.35)
    assert row(frame, "vanilla")["test_top1_4x3_mean"] == pytest.approx(statistics.mean(TOP1["vanilla"]) + 0.05)
    assert pd.isna(row(frame, "ns1")["test_top1_4x3_mean"])


def test_stagewise_plot_values(summary):
    _, frame = summary

    figure = plot_stagewise(frame)

    axes = figure.axes[0]
    containers = {container.get_label(): container for container in axes.containers}
    ns_line, rns_line = containers["NS-k"].lines[0], containers["rNS-k"].lines[0]
    ns_variants = ["vanilla", "ns1", "ns2", "ns3", "ns4"]
    rns_variants = ["vanilla", "rns1", "rns2", "rns3", "ns4"]
    assert list(ns_line.get_xdata()) == [0, 1, 2, 3, 4]
    assert list(ns_line.get_ydata()) == pytest.approx([statistics.mean(TOP1[v]) for v in ns_variants])
    assert list(rns_line.get_xdata()) == [0, 1, 2, 3, 4]
    assert list(rns_line.get_ydata()) == pytest.approx([statistics.mean(TOP1[v]) for v in rns_variants])
    # Error bars span mean ± std: the segment of ns1 goes from mean - std to mean + std.
    segments = containers["NS-k"].lines[2][0].get_segments()
    ns1_mean, ns1_std = statistics.mean(TOP1["ns1"]), statistics.stdev(TOP1["ns1"])
    assert segments[1][:, 1].tolist() == pytest.approx([ns1_mean - ns1_std, ns1_mean + ns1_std])


def test_temporal_state_plot_values(summary):
    _, frame = summary

    figure = plot_temporal_state(frame)

    axes = figure.axes[0]
    bars = {container.get_label(): container for container in axes.containers if hasattr(container, "patches")}
    state = bars["temporal branch stateful (LIF)"].patches[0].get_height()
    nostate = bars["temporal branch stateless (NSN)"].patches[0].get_height()
    assert state == pytest.approx(statistics.mean(TOP1["stsep-s34-state"]))
    assert nostate == pytest.approx(statistics.mean(TOP1["stsep-s34-nostate"]))
    assert [label.get_text() for label in axes.get_xticklabels()] == ["STSep stages 3, 4"]


def test_energy_plot_values(summary):
    _, frame = summary

    figure = plot_accuracy_vs_energy(frame)

    offsets = figure.axes[0].collections[0].get_offsets()
    expected = sorted(
        (statistics.mean(ENERGY_MJ[v]), statistics.mean(TOP1[v])) for v in ENERGY_MJ
    )
    assert sorted(map(tuple, offsets.tolist())) == pytest.approx(expected)
    labels = {text.get_text() for text in figure.axes[0].texts}
    assert labels == set(ENERGY_MJ)


def test_report_pipeline_writes_and_logs(ablation, tmp_path):
    uri, client, runs = ablation
    output = tmp_path / "report"

    result = subprocess.run(
        [sys.executable, "pipelines/report.py", "--experiment", "report-test", "--tracking-uri", uri, "--output", str(output)],
        cwd=REPO_ROOT, env=PIPELINE_ENV, capture_output=True, text=True, timeout=180,
    )

    assert result.returncode == 0, result.stderr
    assert "stsep-s34-nostate" in result.stdout
    table = pd.read_csv(output / "report.csv").set_index("variant")
    for variant, values in TOP1.items():
        assert table.loc[variant, "top1_mean"] == pytest.approx(statistics.mean(values))
        assert table.loc[variant, "top1_std"] == pytest.approx(statistics.stdev(values))
    markdown = (output / "report.md").read_text()
    assert "| test top-1 4x3 mean |" in markdown
    assert f"| {statistics.mean(TOP1['vanilla']) + 0.05:.4f} |" in markdown
    assert f"| ns2 | NNSS | 2 | {statistics.mean(TOP1['ns2']):.4f} ± {statistics.stdev(TOP1['ns2']):.4f} |" in markdown
    for name in ("stagewise", "stsep_temporal_state", "accuracy_vs_energy"):
        image = matplotlib.image.imread(output / f"{name}.png")
        assert image.shape[0] > 200
        assert image.shape[1] > 300
    view_key = f"stsep-{runs.parent_run_id[:12]}"
    assert f"#/experiments/{runs.experiment_id}/runs?viewStateShareKey={view_key}" in result.stdout
    view = json.loads(client.get_experiment(runs.experiment_id).tags[f"mlflow.sharedViewState.{view_key}"])
    assert view["searchFilter"] == f"tags.`mlflow.parentRunId` = '{runs.parent_run_id}'"
    assert view["selectedColumns"][:2] == ["params.`variant`", "params.`stage_map`"]
    assert "metrics.`best_val_top1`" in view["selectedColumns"]
    assert "metrics.`energy_mj`" in view["selectedColumns"]
    logged = {item.path for item in client.list_artifacts(runs.parent_run_id, "report")}
    assert logged == {
        "report/report.csv", "report/report.md", "report/trials.csv",
        "report/stagewise.png", "report/stsep_temporal_state.png", "report/accuracy_vs_energy.png",
    }


def test_report_picks_latest_parent(ablation):
    _, client, runs = ablation
    experiment_id = runs.experiment_id

    newer = client.create_run(experiment_id, run_name="newer-ablation", tags={"stsep.role": "ablation"})

    try:
        assert find_parent_run(client, experiment_name="report-test").info.run_id == newer.info.run_id
        chosen = find_parent_run(client, experiment_name="report-test", parent_run_id=runs.parent_run_id)
        assert chosen.info.run_id == runs.parent_run_id
    finally:
        client.delete_run(newer.info.run_id)


def test_report_pipeline_unknown_experiment(ablation, capsys):
    uri, _, _ = ablation
    entry_point = load_report_entry_point()

    status = entry_point.main(["--experiment", "no-such-ablation", "--tracking-uri", uri, "--no-log"])

    assert status == 2
    error = capsys.readouterr().err
    assert "'no-such-ablation' not found" in error
    assert "report-test" in error


def load_report_entry_point():
    # The entry points import their shared helpers from the pipelines directory.
    if str(REPO_ROOT / "pipelines") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "pipelines"))
    spec = importlib.util.spec_from_file_location("report_entry_point", REPO_ROOT / "pipelines" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
