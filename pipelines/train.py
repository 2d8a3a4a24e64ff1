"""Train one model variant with one seed: a single Ray Train `TorchTrainer` run.

This is what each trial of ``pipelines/ablation.py`` runs, usable on its own:

    python pipelines/train.py --config demo --variant stsep-s34-state --seed 0
    python pipelines/train.py --config ucf101 --variant ns2 --set data.root=/data/ucf101 --set train.epochs=50
    python pipelines/train.py --smoke --variant vanilla

The run logs to MLflow as a top-level run named ``<variant>-seed<seed>`` in the
config's experiment. Running the same command again with the same ``--name``
resumes from the run's latest checkpoint. Exit status: 0 on success, 2 for
an invalid configuration (before Ray starts), 1 when the tracking store or
the storage preflight fails (also before Ray starts) or training fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from _common import (
    add_config_arguments,
    build_compiled_kernels,
    config_error_exit,
    configure_logging,
    export_s3_settings,
    init_ray,
    load_config_from_args,
    open_experiment,
)

logger = logging.getLogger("stsep.pipelines.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--variant", default="vanilla", help="model variant, e.g. vanilla, ns2, rns1, stsep-s34-state")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--name", default=None,
        help="run name; an existing name resumes its latest checkpoint (default: <config name>-<variant>-seed<seed>)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    args = parse_args(argv)
    configure_logging()

    from stsep.config import ConfigError
    from stsep.variants import parse_variant

    config = load_config_from_args(args)
    try:
        parse_variant(args.variant)
    except ValueError as error:
        config_error_exit(ConfigError(f"invalid value {args.variant!r} for --variant: {error}"))
    if args.seed < 0:
        config_error_exit(ConfigError(f"invalid value {args.seed} for --seed: expected a seed >= 0"))

    from stsep.tracking import TrackingUnavailableError, check_tracking_store

    env_vars = export_s3_settings(config)
    try:
        check_tracking_store(config.tracking.uri)
    except TrackingUnavailableError as error:
        logger.error("%s", error)
        return 1
    experiment_id = open_experiment(config)
    if experiment_id is None:
        return 1

    from stsep.training.recorder import TrialTracking
    from stsep.training.trainer import build_trainer, describe_manifest, prepare_data, trial_key

    resources, data_config = config.resources, config.data
    min_cpus = (
        resources.num_workers * resources.cpus_per_worker
        + 2 * data_config.decode_concurrency * data_config.decoder_cpus
        + 1
    )
    build_compiled_kernels()
    init_ray(address=args.ray_address, num_cpus=args.num_cpus, min_cpus=min_cpus, env_vars=env_vars)
    started = time.monotonic()
    prepare_data(config)
    data = describe_manifest(config)
    key = trial_key(variant=args.variant, seed=args.seed)
    name = args.name or f"{config.name}-{key}"
    tracking = TrialTracking(
        tracking_uri=config.tracking.uri,
        experiment_id=experiment_id,
        parent_run_id=None,
        ablation_id=name,
        trial_key=key,
        run_name=f"{args.variant}-seed{args.seed}",
    )
    logger.info(
        "Training %s (seed %d) on %s: %d train and %d %s videos, %d classes, %d epochs",
        args.variant, args.seed, config.data.dataset, data.train_videos, data.eval_videos, data.eval_split,
        data.num_classes, config.train.epochs,
    )
    trainer = build_trainer(
        config=config, data=data, variant=args.variant, seed=args.seed, ablation_id=name, name=key, tracking=tracking
    )
    try:
        result = trainer.fit()
    except Exception as error:  # TrainingFailedError wraps the worker's exception.
        logger.error("Training %s failed: %s", name, error)
        return 1
    metrics = result.metrics or {}
    logger.info(
        "Finished %s in %.0f s: best val top-1 %.4f, last val top-1 %.4f after %s epochs; checkpoint %s",
        name, time.monotonic() - started, metrics.get("best_val_top1", float("nan")),
        metrics.get("val_top1", float("nan")), metrics.get("epoch"), result.checkpoint.path if result.checkpoint else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
