"""Building one trial's `TorchTrainer`: manifest, clip datasets, scaling and run config.

`prepare_data` writes the manifest once (cached on the storage path) and
`describe_manifest` reads what every trial needs from it. `build_trainer`
wires the clip pipelines of the train and evaluation splits, the worker
resources and the fault tolerance settings around `train_loop_per_worker`.
Storage layout under ``storage_path``::

    manifests/<dataset>-split<split>.parquet      shared by every trial
    <ablation>/tune/                              Ray Tune state (ablations)
    <ablation>/train/<trial>/checkpoint_*/        Ray Train checkpoints per trial
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import Any, Sequence

from stsep.config import ExperimentConfig
from stsep.training.loop import LoopSpec, train_loop_per_worker
from stsep.training.recorder import TrialTracking

__all__ = [
    "DataSummary",
    "build_trainer",
    "describe_manifest",
    "prepare_data",
    "resolve_use_gpu",
    "storage_join",
    "trial_key",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSummary:
    """Summary of the prepared manifest that every trial needs.

    Attributes:
        manifest_path: Manifest location (local path or ``s3://`` URI).
        dataset: Dataset name stored in the manifest (decides whether flipping is allowed).
        num_classes: Number of classes (largest label + 1).
        class_names: Class name per label.
        train_videos: Readable training videos after ``limit_per_class``.
        eval_split: Split used for evaluation: ``val``, or ``test`` when the manifest has no ``val`` rows.
        eval_videos: Readable videos of the evaluation split after ``limit_per_class``.
    """

    manifest_path: str
    dataset: str
    num_classes: int
    class_names: tuple[str, ...]
    train_videos: int
    eval_split: str
    eval_videos: int


def storage_join(base: str, *parts: str) -> str:
    """Join path parts onto a local directory or an ``s3://`` URI."""
    return "/".join([base.rstrip("/"), *parts])


def prepare_data(config: ExperimentConfig, *, force: bool = False) -> str:
    """Write the manifest of `config`'s dataset unless it already exists; return its location."""
    from stsep.data import _filesystem

    path = config.manifest_path
    if config.data.dataset == "manifest" or (not force and _filesystem.exists(path)):
        logger.info("Using manifest %s", path)
        return path
    from stsep.data import prepare_manifest

    logger.info("Preparing the %s manifest at %s", config.data.dataset, path)
    prepare_manifest(config.data.dataset, root=config.data.root, split=config.data.split, output=path)
    return path


def describe_manifest(config: ExperimentConfig) -> DataSummary:
    """Read class names and split sizes from the prepared manifest."""
    from stsep.data import read_manifest, select_split

    table = read_manifest(config.manifest_path)
    labels = table[["label", "label_name"]].drop_duplicates().sort_values("label")
    num_classes = int(labels["label"].max()) + 1
    names = {int(label): str(name) for label, name in zip(labels["label"], labels["label_name"])}
    class_names = tuple(names.get(label, str(label)) for label in range(num_classes))

    eval_split = "val" if (table["split"] == "val").any() else "test"
    train = select_split(table, split="train", limit_per_class=config.data.limit_per_class)
    evaluation = select_split(table, split=eval_split, limit_per_class=config.data.limit_per_class)
    return DataSummary(
        manifest_path=config.manifest_path,
        dataset=str(table.attrs.get("dataset") or config.data.dataset),
        num_classes=num_classes,
        class_names=class_names,
        train_videos=int(train["readable"].sum()),
        eval_split=eval_split,
        eval_videos=int(evaluation["readable"].sum()),
    )


def resolve_use_gpu(setting: bool | str) -> bool:
    """Resolve ``resources.use_gpu``: ``auto`` is True when the Ray cluster has GPUs."""
    if setting != "auto":
        return bool(setting)
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def trial_key(*, variant: str, seed: int, sweep: dict[str, Any] | None = None) -> str:
    """Name a grid point: ``<variant>-seed<seed>``, then ``-<key>=<value>`` per swept setting."""
    parts = [f"{variant}-seed{seed}"]
    for key, value in sorted((sweep or {}).items()):
        parts.append(f"{key.split('.')[-1]}={value}")
    return re.sub(r"[^A-Za-z0-9_.=\-]", "_", "-".join(parts))


def build_trainer(
    *,
    config: ExperimentConfig,
    data: DataSummary,
    variant: str,
    seed: int,
    ablation_id: str,
    name: str,
    tracking: TrialTracking | None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Build the `TorchTrainer` of one trial.

    Args:
        config: Resolved config of this grid point (swept settings applied).
        data: The prepared manifest's summary.
        variant: Variant name.
        seed: Trial seed.
        ablation_id: Ablation name; the trial's checkpoints go to ``<storage>/<ablation_id>/train/<name>``.
        name: Trial name, unique in the ablation. A rerun with the same name
            resumes from the latest checkpoint found there.
        tracking: MLflow coordinates, or None to log nothing.
        callbacks: Ray Train callbacks, such as Tune's ``TuneReportCallback``.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from stsep.data import ClipConfig, build_clip_dataset
    from stsep.storage import ray_storage_filesystem

    if data.train_videos < config.train.global_batch_size:
        raise ValueError(
            f"the train split has {data.train_videos} readable videos, fewer than train.global_batch_size="
            f"{config.train.global_batch_size}; lower the batch size or raise data.limit_per_class"
        )
    clip = ClipConfig.for_dataset(
        data.dataset,
        num_frames=config.data.num_frames,
        crop_size=config.data.crop_size,
        short_side=config.data.short_side,
        num_clips=config.data.num_clips,
        num_crops=config.data.num_crops,
        max_unreadable_fraction=config.data.max_unreadable_fraction,
    )
    if config.data.flip is not None:
        clip = replace(clip, flip_allowed=config.data.flip)
    skip_counters = {
        "train": f"stsep-skips-{ablation_id}-{name}-train",
        data.eval_split: f"stsep-skips-{ablation_id}-{name}-{data.eval_split}",
    }
    common = dict(
        decode_concurrency=config.data.decode_concurrency,
        limit_per_class=config.data.limit_per_class,
        decoder_num_cpus=config.data.decoder_cpus,
        seed=seed,
    )
    # NOTE: Ray Train splits every dataset with streaming_split(equal=True), which
    # drops up to num_workers - 1 clips at the end of the evaluation split.
    datasets = {
        "train": build_clip_dataset(
            data.manifest_path, split="train", clip=clip, training=True, skip_counter=skip_counters["train"], **common
        ),
        "val": build_clip_dataset(
            data.manifest_path, split=data.eval_split, clip=clip, training=False,
            skip_counter=skip_counters[data.eval_split], **common
        ),
    }

    spec = LoopSpec(
        config=config,
        variant=variant,
        seed=seed,
        num_classes=data.num_classes,
        class_names=data.class_names,
        steps_per_epoch=data.train_videos // config.train.global_batch_size,
        tracking=tracking,
        skip_counters=skip_counters,
    )
    resources = config.resources
    scaling = ray.train.ScalingConfig(
        num_workers=resources.num_workers,
        use_gpu=resolve_use_gpu(resources.use_gpu),
        resources_per_worker={"CPU": resources.cpus_per_worker},
    )
    # An explicit filesystem carries the configured S3 endpoint to Ray Train.
    storage_path, storage_filesystem = ray_storage_filesystem(storage_join(config.storage_path, ablation_id, "train"))
    run_config = ray.train.RunConfig(
        name=name,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        failure_config=ray.train.FailureConfig(max_failures=config.tune.worker_max_failures),
        # The latest checkpoint is always kept as well, for resuming.
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=config.tune.metric,
            checkpoint_score_order="min" if config.tune.metric == "val_loss" else "max",
        ),
        callbacks=list(callbacks),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=spec.to_dict(),
        scaling_config=scaling,
        run_config=run_config,
        datasets=datasets,
    )
