"""The ablation grid on Ray Tune: one trial per (variant, seed, swept settings) point.

Each trial is a function trainable that builds and fits one `TorchTrainer`
(Train V2) with Tune's ``TuneReportCallback``, so every epoch's metrics and
checkpoint reach Tune. A trial's Train run is named after its grid point, so
when Tune retries a failed trial or `Tuner.restore` resumes an interrupted
ablation, the new `TorchTrainer` finds the old run's checkpoints and
continues from the latest one. Finished trials are not run again.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

from stsep.config import ExperimentConfig, config_from_dict
from stsep.training.recorder import TrialTracking
from stsep.training.trainer import DataSummary, build_trainer, storage_join, trial_key

__all__ = [
    "AblationContext",
    "grid_points",
    "load_ablation_config",
    "run_grid",
    "save_ablation_config",
    "trial_trainable",
    "tune_path",
]

logger = logging.getLogger(__name__)

# NOTE: the trainable only waits on its TorchTrainer, whose workers and decoders
# reserve their own CPUs, so it reserves a quarter CPU (Tune rejects zero).
TRAINABLE_CPUS = 0.25

# Ray Tune 2.60 copies these from the driver's environment into each trial
# actor's runtime environment, which Ray's runtime-env agent logs in plain text.
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class AblationContext:
    """Settings shared by every trial of one ablation.

    Attributes:
        config: The resolved base config.
        ablation_id: Name of the ablation (Tune experiment, MLflow tag).
        data: Summary of the prepared manifest.
        tracking_uri: Absolute MLflow tracking URI.
        experiment_id: MLflow experiment id.
        parent_run_id: The ablation's MLflow run.
    """

    config: ExperimentConfig
    ablation_id: str
    data: DataSummary
    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def to_dict(self) -> dict[str, Any]:
        """Return the plain dict passed to the trials."""
        return {
            "config": self.config.to_dict(),
            "ablation_id": self.ablation_id,
            "data": dict(self.data.__dict__, class_names=list(self.data.class_names)),
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "AblationContext":
        """Rebuild from `to_dict` output."""
        data = dict(raw["data"])
        data["class_names"] = tuple(data["class_names"])
        return cls(
            config=config_from_dict(raw["config"], resolve_paths=False),
            ablation_id=raw["ablation_id"],
            data=DataSummary(**data),
            tracking_uri=raw["tracking_uri"],
            experiment_id=raw["experiment_id"],
            parent_run_id=raw["parent_run_id"],
        )


def grid_points(config: ExperimentConfig) -> list[dict[str, Any]]:
    """List the grid: every variant x seed x combination of swept values."""
    sweep_keys = sorted(config.grid.sweep)
    sweep_values = [config.grid.sweep[key] for key in sweep_keys]
    points = []
    for variant, seed in itertools.product(config.grid.variants, config.grid.seeds):
        for combination in itertools.product(*sweep_values):
            points.append({"variant": variant, "seed": seed, "sweep": dict(zip(sweep_keys, combination))})
    return points


def tune_path(config: ExperimentConfig, ablation_id: str) -> str:
    """Return the Tune experiment directory of an ablation (``<storage>/<ablation>/tune``)."""
    return storage_join(config.storage_path, ablation_id, "tune")


def save_ablation_config(config: ExperimentConfig, ablation_id: str) -> str:
    """Write the resolved config to ``<storage>/<ablation>/config.yaml``, which `--resume` reads back."""
    from stsep.storage import filesystem_for

    path = storage_join(config.storage_path, ablation_id, "config.yaml")
    filesystem, location = filesystem_for(path)
    filesystem.create_dir(location.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(location) as stream:
        stream.write(config.to_yaml().encode())
    return path


def load_ablation_config(storage_path: str, ablation_id: str) -> ExperimentConfig | None:
    """Read the config saved by `save_ablation_config`, or None when the ablation has none."""
    import pyarrow.fs
    import yaml

    from stsep.storage import filesystem_for

    path = storage_join(storage_path, ablation_id, "config.yaml")
    filesystem, location = filesystem_for(path)
    if filesystem.get_file_info(location).type != pyarrow.fs.FileType.File:
        return None
    with filesystem.open_input_stream(location) as stream:
        return config_from_dict(yaml.safe_load(stream.read().decode()), resolve_paths=False)


def trial_trainable(trial_config: dict[str, Any], *, ablation: dict[str, Any]) -> None:
    """Run one grid point: build its `TorchTrainer` and fit it (a Tune function trainable).

    Args:
        trial_config: Tune's config of the trial, ``{"point": {"variant", "seed", "sweep"}}``.
        ablation: `AblationContext.to_dict` output, shared by every trial.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    from stsep.tracking import find_or_create_trial_run

    context = AblationContext.from_dict(ablation)
    point = trial_config["point"]
    variant, seed, sweep = point["variant"], int(point["seed"]), dict(point["sweep"])
    config = context.config.replace(sweep) if sweep else context.config
    key = trial_key(variant=variant, seed=seed, sweep=sweep)
    tracking = TrialTracking(
        tracking_uri=context.tracking_uri,
        experiment_id=context.experiment_id,
        parent_run_id=context.parent_run_id,
        ablation_id=context.ablation_id,
        trial_key=key,
        run_name=f"{variant}-seed{seed}" if not sweep else key,
    )
    trainer = build_trainer(
        config=config,
        data=context.data,
        variant=variant,
        seed=seed,
        ablation_id=context.ablation_id,
        name=key,
        tracking=tracking,
        callbacks=[TuneReportCallback()],
    )
    try:
        trainer.fit()
    except Exception:
        # Mark the MLflow run failed; a Tune retry reopens the same run.
        run = find_or_create_trial_run(
            tracking_uri=tracking.tracking_uri, experiment_id=tracking.experiment_id,
            parent_run_id=tracking.parent_run_id, ablation_id=tracking.ablation_id,
            trial_key=tracking.trial_key, run_name=tracking.run_name,
        )
        run.finish("FAILED")
        raise


def run_grid(context: AblationContext, *, resume: bool) -> Any:
    """Run (or resume) the ablation grid on Ray Tune and return the `ResultGrid`.

    Args:
        context: The ablation's shared settings.
        resume: Restore the Tune experiment of ``context.ablation_id`` and
            run only its unfinished and errored trials.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from stsep.storage import ray_storage_filesystem

    config = context.config
    _keep_credentials_out_of_runtime_env()
    trainable = tune.with_resources(
        tune.with_parameters(trial_trainable, ablation=context.to_dict()), {"cpu": TRAINABLE_CPUS}
    )
    path = tune_path(config, context.ablation_id)
    # An explicit filesystem carries the configured S3 endpoint to Ray Tune,
    # which then expects paths without the s3:// scheme.
    storage_location, filesystem = ray_storage_filesystem(storage_join(config.storage_path, context.ablation_id))
    restore_path = f"{storage_location}/tune"
    if resume:
        if not tune.Tuner.can_restore(restore_path, storage_filesystem=filesystem):
            raise FileNotFoundError(f"no Tune experiment to resume at {path}; run without --resume first")
        logger.info("Resuming ablation %s from %s", context.ablation_id, path)
        tuner = tune.Tuner.restore(
            restore_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
            storage_filesystem=filesystem,
        )
        return tuner.fit()

    mode = "min" if config.tune.metric == "val_loss" else "max"
    scheduler = None
    if config.tune.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=config.train.epochs,
            grace_period=config.tune.asha_grace_period,
            reduction_factor=config.tune.asha_reduction_factor,
        )
    points = grid_points(config)
    logger.info(
        "Ablation %s: %d trials (%d variants x %d seeds%s), scheduler %s, at most %s at once",
        context.ablation_id, len(points), len(config.grid.variants), len(config.grid.seeds),
        "".join(f" x {len(values)} {key}" for key, values in config.grid.sweep.items()),
        config.tune.scheduler, config.tune.max_concurrent_trials or "as resources allow",
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"point": tune.grid_search(points)},
        tune_config=tune.TuneConfig(
            metric=config.tune.metric,
            mode=mode,
            scheduler=scheduler,
            max_concurrent_trials=config.tune.max_concurrent_trials,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=storage_location,
            storage_filesystem=filesystem,
            failure_config=tune.FailureConfig(max_failures=config.tune.trial_max_failures),
            callbacks=[ProgressCallback(context)],
        ),
    )
    return tuner.fit()


def _keep_credentials_out_of_runtime_env() -> None:
    """Stop Ray Tune from copying AWS credentials into the trials' runtime environments.

    Trials then find credentials like every other Ray worker: through the
    AWS chain of their node (instance role, mounted secret, or the
    environment Ray was started with), and no key reaches Ray's logs.
    """
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    # NOTE: edits a private Ray module; the test that searches Ray's logs for
    # planted credentials catches a Ray release that moves it.
    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if isinstance(propagated, set):
        propagated.difference_update(CREDENTIAL_VARS)


def _trial_name(trial: Any) -> str:
    point = trial.config["point"]
    return trial_key(variant=point["variant"], seed=int(point["seed"]), sweep=point["sweep"])


class ProgressCallback(Callback):
    """Logs one line when a trial reports an epoch, finishes or fails.

    A trial that ASHA stops early gets its MLflow run marked FINISHED with
    the tag ``stsep.stopped_early = asha``, because its workers are stopped
    before they can end the run themselves.
    """

    def __init__(self, context: AblationContext) -> None:
        self._context = context
        self._grid_size = len(grid_points(context.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Log the trial's latest epoch."""
        # Tune creates trials as resources free up, so the grid, not `trials`, gives the total.
        done = sum(1 for item in trials if item.status == "TERMINATED")
        logger.info(
            "[%d/%d done] %s epoch %s: val top-1 %.4f, %.1f clips/s",
            done, self._grid_size, _trial_name(trial), result.get("epoch"), result.get("val_top1", float("nan")),
            result.get("clips_per_second", float("nan")),
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Log a finished trial, and end the MLflow run of one that ASHA stopped early."""
        result = trial.last_result or {}
        epochs = self._context.config.train.epochs
        logger.info("Trial %s finished: best val top-1 %.4f after %s of %d epochs",
                    _trial_name(trial), result.get("best_val_top1", float("nan")), result.get("epoch"), epochs)
        if self._context.config.tune.scheduler == "asha" and int(result.get("epoch") or 0) < epochs:
            self._end_stopped_run(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Log a failed trial."""
        logger.error("Trial %s failed; see its error file under the Tune experiment directory", _trial_name(trial))

    def _end_stopped_run(self, trial: Any) -> None:
        from stsep.tracking import find_or_create_trial_run

        point = trial.config["point"]
        key = trial_key(variant=point["variant"], seed=int(point["seed"]), sweep=point["sweep"])
        run = find_or_create_trial_run(
            tracking_uri=self._context.tracking_uri, experiment_id=self._context.experiment_id,
            parent_run_id=self._context.parent_run_id, ablation_id=self._context.ablation_id,
            trial_key=key, run_name=key,
        )
        run.set_tags({"stsep.stopped_early": "asha"})
        run.finish("FINISHED")
