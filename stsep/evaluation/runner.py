"""Evaluate one trained checkpoint: multi-view accuracy, retrieval, firing rates and energy.

`evaluate_checkpoint` runs the model over every view of the evaluation split
once. That pass gives the per-view logits, which are averaged per video (see
`stsep.evaluation.metrics.aggregate_views`), the query features for
retrieval, and the firing rates that the energy estimate uses. Retrieval
needs a second pass over the train split for the gallery.
`write_evaluation_artifacts` and `log_evaluation` store the results.

Metric names, with `<split>` the evaluated split and `<views>` such as `4x3`:
`<split>_top1_<views>`, `<split>_top5_<views>`, `<split>_videos_<views>`,
`recall_at_<k>` for k in 1, 5, 10, 20, and the energy metrics of
`stsep.evaluation.energy`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stsep.evaluation.batches import ENGINES, Skips, iter_view_batches
from stsep.evaluation.energy import EnergyProfile, profile_energy
from stsep.evaluation.loading import LoadedCheckpoint
from stsep.evaluation.metrics import VIEW_AGGREGATIONS, ClassificationResult, ViewSpec
from stsep.evaluation.multiview import ViewLogits, collect_view_logits, evaluate_multiview
from stsep.evaluation.retrieval import (
    DEFAULT_RECALL_KS,
    aggregate_video_features,
    extract_video_features,
    recall_at_k,
    recall_metrics,
)

__all__ = [
    "EVALUATION_ARTIFACT_DIR",
    "EvaluationReport",
    "EvaluationSettings",
    "clip_config_for",
    "default_split",
    "evaluate_checkpoint",
    "log_evaluation",
    "write_evaluation_artifacts",
]

logger = logging.getLogger(__name__)

EVALUATION_ARTIFACT_DIR = "evaluation"


@dataclass(frozen=True)
class EvaluationSettings:
    """How to evaluate a checkpoint.

    Attributes:
        views: clips x crops per video.
        split: split to evaluate. None takes `test` when the manifest has it, else `val`.
        manifest: manifest path or URI. None takes the checkpoint config's manifest.
        aggregation: `logits` (mean of logits over views) or `softmax` (mean of probabilities).
        batch_size: views per forward pass.
        engine: `ray` (Ray Data decoding) or `local` (in-process decoding).
        limit_per_class: keep at most this many videos per class and split.
        retrieval: also compute Recall@k against the train split.
        profile: also measure firing rates and estimate operations and energy.
        device: torch device for the model.
    """

    views: ViewSpec = ViewSpec(num_clips=1, num_crops=1)
    split: str | None = None
    manifest: str | None = None
    aggregation: str = "logits"
    batch_size: int = 8
    engine: str = "ray"
    limit_per_class: int | None = None
    retrieval: bool = False
    profile: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.aggregation not in VIEW_AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; choose one of {', '.join(VIEW_AGGREGATIONS)}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class EvaluationReport:
    """Results of evaluating one checkpoint.

    Attributes:
        variant: the checkpoint's variant.
        run_id: MLflow run of the checkpoint, if known.
        split: evaluated split.
        views: clips x crops per video.
        aggregation: how views were combined.
        manifest: the manifest used.
        result: video-level classification results.
        class_names: names by class index.
        recalls: Recall@k by k, when retrieval ran.
        energy: the energy profile, when profiling ran.
        unreadable: (path, reason) of the videos that could not be decoded.
        seconds: wall time of the evaluation.
    """

    variant: str
    run_id: str | None
    split: str
    views: ViewSpec
    aggregation: str
    manifest: str
    result: ClassificationResult
    class_names: tuple[str, ...]
    recalls: dict[int, float] | None
    energy: EnergyProfile | None
    unreadable: tuple[tuple[str, str], ...]
    seconds: float

    def metrics(self) -> dict[str, float]:
        """Return the MLflow metrics of this evaluation (names in the module docstring)."""
        suffix = self.views.label
        values = {
            f"{self.split}_top1_{suffix}": self.result.top1,
            f"{self.split}_top5_{suffix}": self.result.top5,
            f"{self.split}_videos_{suffix}": float(self.result.num_videos),
        }
        if self.recalls is not None:
            values.update(recall_metrics(self.recalls))
        if self.energy is not None:
            values.update(self.energy.metrics())
        return values


def default_split(manifest) -> str:
    """Return `test` when the manifest has test rows, else `val`."""
    from stsep.data import read_manifest

    table = read_manifest(manifest) if isinstance(manifest, str) else manifest
    splits = set(table["split"])
    if "test" in splits:
        return "test"
    if "val" in splits:
        return "val"
    raise ValueError(f"the manifest has no test or val rows (splits: {sorted(splits)}); pass --split")


def clip_config_for(loaded: LoadedCheckpoint, views: ViewSpec):
    """Return the `ClipConfig` of the checkpoint's data settings with `views` evaluation views."""
    from stsep.data import ClipConfig

    data = loaded.config.data
    return ClipConfig.for_dataset(
        data.dataset,
        num_frames=data.num_frames,
        crop_size=data.crop_size,
        short_side=data.short_side,
        num_clips=views.num_clips,
        num_crops=views.num_crops,
        max_unreadable_fraction=data.max_unreadable_fraction,
    )


def evaluate_checkpoint(loaded: LoadedCheckpoint, settings: EvaluationSettings) -> EvaluationReport:
    """Evaluate `loaded` on the evaluation split of its manifest with the given `settings`."""
    from stsep.data import read_manifest, to_model_input
    from stsep.profile import record_firing_rates

    started = time.perf_counter()
    manifest_path = settings.manifest or loaded.config.manifest_path
    manifest = read_manifest(manifest_path)
    split = settings.split or default_split(manifest)
    clip = clip_config_for(loaded, settings.views)
    model = loaded.model.to(settings.device).eval()
    skips = Skips()
    logger.info(
        "evaluating %s on split %r of %s with %s views (%s averaging)",
        loaded.variant, split, manifest_path, settings.views.label, settings.aggregation,
    )

    batches = iter_view_batches(
        manifest, split=split, clip=clip, batch_size=settings.batch_size, engine=settings.engine,
        limit_per_class=settings.limit_per_class, skips=skips,
    )
    # NOTE: the model runs in this process on one device. Only decoding is spread over the cluster.
    with record_firing_rates(model) as recorder:
        view_logits = collect_view_logits(
            model, batches, to_input=to_model_input, device=settings.device, with_features=settings.retrieval
        )
        firing_rates = recorder.rates()
    result = evaluate_multiview(
        view_logits, num_classes=loaded.num_classes, aggregation=settings.aggregation,
        expected_views=settings.views.num_views,
    )

    recalls = _retrieval(loaded, settings, manifest, clip, view_logits) if settings.retrieval else None
    energy = None
    if settings.profile:
        energy = profile_energy(
            model, firing_rates=firing_rates, num_frames=clip.num_frames, height=clip.crop_size, width=clip.crop_size
        )

    report = EvaluationReport(
        variant=loaded.variant,
        run_id=loaded.run_id,
        split=split,
        views=settings.views,
        aggregation=settings.aggregation,
        manifest=str(manifest_path),
        result=result,
        class_names=loaded.class_names,
        recalls=recalls,
        energy=energy,
        unreadable=tuple(skips.skipped),
        seconds=time.perf_counter() - started,
    )
    if report.unreadable:
        logger.warning(
            "%d videos of split %r could not be decoded and are left out: %s",
            len(report.unreadable), split, ", ".join(path for path, _ in report.unreadable[:10]),
        )
    logger.info(
        "%s: top-1 %.4f, top-5 %.4f over %d videos in %.1f s",
        loaded.variant, result.top1, result.top5, result.num_videos, report.seconds,
    )
    return report


def _retrieval(loaded, settings, manifest, clip, view_logits: ViewLogits) -> dict[int, float]:
    from stsep.data import to_model_input

    queries = aggregate_video_features(view_logits.features, view_logits.video_ids, view_logits.labels)
    gallery_batches = iter_view_batches(
        manifest, split="train", clip=clip, batch_size=settings.batch_size, engine=settings.engine,
        limit_per_class=settings.limit_per_class,
    )
    gallery = extract_video_features(loaded.model, gallery_batches, to_input=to_model_input, device=settings.device)
    recalls = recall_at_k(queries.features, queries.labels, gallery.features, gallery.labels, ks=DEFAULT_RECALL_KS)
    logger.info(
        "retrieval, %d queries against %d train videos: %s", len(queries.video_ids), len(gallery.video_ids),
        ", ".join(f"R@{k} {value:.4f}" for k, value in recalls.items()),
    )
    return recalls


def write_evaluation_artifacts(report: EvaluationReport, directory: Path) -> list[Path]:
    """Write the confusion matrix (CSV, PNG), per-class accuracy, predictions and metrics to `directory`."""
    from stsep.analysis.plots import plot_confusion_matrix

    directory.mkdir(parents=True, exist_ok=True)
    num_classes = report.result.confusion.shape[0]
    names = list(report.class_names) if len(report.class_names) == num_classes else [str(i) for i in range(num_classes)]

    confusion = pd.DataFrame(report.result.confusion, index=names, columns=names)
    confusion.index.name = "true \\ predicted"
    confusion.to_csv(directory / "confusion_matrix.csv")
    support = report.result.confusion.sum(axis=1)
    pd.DataFrame(
        {"class": names, "accuracy": report.result.class_accuracy, "videos": support}
    ).to_csv(directory / "per_class_accuracy.csv", index=False)
    pd.DataFrame(
        {
            "video_id": list(report.result.video_ids),
            "label": report.result.labels,
            "prediction": report.result.predictions,
            "correct": report.result.labels == report.result.predictions,
        }
    ).to_csv(directory / "predictions.csv", index=False)

    title = f"{report.variant}, {report.split} {report.views.label}"
    figure = plot_confusion_matrix(report.result.confusion, names, title=title)
    figure.savefig(directory / "confusion_matrix.png", dpi=100, bbox_inches="tight")
    figure.clear()

    summary = {
        "variant": report.variant,
        "run_id": report.run_id,
        "split": report.split,
        "views": report.views.label,
        "aggregation": report.aggregation,
        "manifest": report.manifest,
        "metrics": report.metrics(),
        "unreadable_videos": [list(item) for item in report.unreadable],
    }
    if report.energy is not None:
        summary["energy_assumptions"] = {
            "num_frames": report.energy.num_frames, "height": report.energy.height, "width": report.energy.width,
        }
    (directory / "metrics.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    return sorted(directory.iterdir())


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def log_evaluation(client, run_id: str, report: EvaluationReport, directory: Path) -> str:
    """Log the metrics to `run_id` and the files in `directory` under `evaluation/<split>_<views>/`.

    Returns:
        The artifact path the files went to.
    """
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    metrics = [Metric(key, float(value), timestamp, 0) for key, value in report.metrics().items()]
    client.log_batch(run_id, metrics=metrics)
    artifact_path = f"{EVALUATION_ARTIFACT_DIR}/{report.split}_{report.views.label}"
    client.log_artifacts(run_id, str(directory), artifact_path=artifact_path)
    logger.info("logged %d metrics and %s/ to run %s", len(metrics), artifact_path, run_id)
    return artifact_path

