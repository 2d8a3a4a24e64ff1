"""MLflow logging of one trial from rank 0 of its Ray Train worker group.

The trial's child run is found again by its tags (or by the run id stored in
the checkpoint), so a restarted worker group or a resumed ablation continues
the same run. Per-epoch metrics use the epoch number as MLflow step.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stsep.config import ExperimentConfig
from stsep.tracking import RunLogger, find_or_create_trial_run

__all__ = ["TrialRecorder", "TrialTracking"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialTracking:
    """MLflow coordinates of a trial: the store, experiment, parent run and the trial's tags.

    Attributes:
        tracking_uri: Absolute tracking URI.
        experiment_id: MLflow experiment id.
        parent_run_id: The ablation's run, or None for a standalone training run.
        ablation_id: Name of the ablation (tag ``stsep.ablation``).
        trial_key: Unique trial name in the ablation (tag ``stsep.trial``).
        run_name: Display name, ``<variant>-seed<seed>``.
    """

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None
    ablation_id: str
    trial_key: str
    run_name: str

    def to_dict(self) -> dict[str, Any]:
        """Return the plain dict form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "TrialTracking":
        """Rebuild from `to_dict` output."""
        return cls(**raw)


class TrialRecorder:
    """Logs one trial to its MLflow child run."""

    def __init__(self, run: RunLogger) -> None:
        self.run = run

    @property
    def run_id(self) -> str:
        """The MLflow run id."""
        return self.run.run_id

    @classmethod
    def start(cls, *, tracking: TrialTracking, run_id: str | None = None) -> "TrialRecorder":
        """Find or create the trial's run and mark it running."""
        run = find_or_create_trial_run(
            tracking_uri=tracking.tracking_uri,
            experiment_id=tracking.experiment_id,
            parent_run_id=tracking.parent_run_id,
            ablation_id=tracking.ablation_id,
            trial_key=tracking.trial_key,
            run_name=tracking.run_name,
            run_id=run_id,
        )
        return cls(run)

    def log_setup(self, *, config: ExperimentConfig, variant: str, seed: int, num_params: int) -> None:
        """Log the variant's params, the trial's main settings and the full config."""
        from stsep.variants import parse_variant

        params: dict[str, Any] = dict(parse_variant(variant).to_params())
        params.update(
            {
                "variant": variant,
                "seed": seed,
                "dataset": config.data.dataset,
                "split": config.data.split,
                "num_frames": config.data.num_frames,
                "crop_size": config.data.crop_size,
                "depth": config.model.depth,
                "width": config.model.width,
                "epochs": config.train.epochs,
                "global_batch_size": config.train.global_batch_size,
                "optimizer": config.train.optimizer,
                "lr": config.train.lr,
                "num_workers": config.resources.num_workers,
                "num_params": num_params,
            }
        )
        self.run.log_params(params)
        self.run.log_config(config.to_dict())

    def log_epoch(self, metrics: Mapping[str, float], *, epoch: int, skip_counters: Mapping[str, str]) -> None:
        """Log one epoch's metrics (buffered while the store is unreachable)."""
        values = {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}
        values["unreadable_videos"] = float(_unreadable_count(skip_counters))
        self.run.log_metrics(values, step=epoch)

    def log_best_checkpoint(self, directory: Path) -> None:
        """Upload the best checkpoint as ``checkpoints/best/checkpoint.pt``."""
        try:
            self.run.log_artifact(directory / "checkpoint.pt", artifact_path="checkpoints/best")
        except Exception as error:  # An artifact upload must not stop training.
            logger.warning("could not upload the best checkpoint of run %s: %s", self.run_id, error)

    def log_evaluation(self, result: Any, *, class_names: Sequence[str]) -> None:
        """Upload an epoch's confusion matrix (CSV and PNG) and per-class accuracy, replacing earlier ones."""
        import pandas as pd

        names = list(class_names) or [str(index) for index in range(result.confusion.shape[0])]
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            frame = pd.DataFrame(result.confusion, index=names, columns=names)
            frame.index.name = "true \\ predicted"
            frame.to_csv(root / "confusion_matrix.csv")
            pd.DataFrame({"class": names, "accuracy": result.class_accuracy}).to_csv(
                root / "per_class_accuracy.csv", index=False
            )
            _plot_confusion(result.confusion, names, root / "confusion_matrix.png")
            for name in ("confusion_matrix.csv", "confusion_matrix.png", "per_class_accuracy.csv"):
                try:
                    self.run.log_artifact(root / name)
                except Exception as error:  # Artifacts are best effort at the end of a run.
                    logger.warning("could not upload %s to run %s: %s", name, self.run_id, error)

    def log_unreadable(self, skip_counters: Mapping[str, str]) -> None:
        """Upload the list of unreadable videos when there are any."""
        lines = []
        for split, name in skip_counters.items():
            report = _skip_report(name)
            if report is None:
                continue
            lines += [f"{split}\t{path}\t{reason}" for path, reason in zip(report.files, report.reasons)]
        if lines:
            self.run.log_text("\n".join(lines) + "\n", artifact_file="unreadable_videos.tsv")

    def finish(self, status: str) -> None:
        """Flush buffered metrics and end the run with `status`."""
        self.run.finish(status)


def _skip_report(name: str) -> Any:
    from stsep.data.skips import read_skip_report

    try:
        return read_skip_report(name)
    except ValueError:  # ray.get_actor raises ValueError when no such actor exists.
        return None


def _unreadable_count(skip_counters: Mapping[str, str]) -> int:
    count = 0
    for name in skip_counters.values():
        report = _skip_report(name)
        if report is not None:
            count += len(report.files)
    return count


def _plot_confusion(matrix: np.ndarray, names: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    size = min(12.0, 2.0 + 0.35 * len(names))
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    if len(names) <= 30:
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize="small")
        axes.set_yticks(range(len(names)), names, fontsize="small")
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, str(count), ha="center", va="center", fontsize="x-small")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    figure.savefig(path, dpi=100, bbox_inches="tight")
