"""Run the stage-wise ablation: every variant x seed x swept setting as a Ray Tune grid.

    python pipelines/ablation.py                          # demo preset, local Ray, local MLflow store
    python pipelines/ablation.py --config demo --smoke    # a few minutes on two CPU cores
    python pipelines/ablation.py --config ucf101 --set data.root=s3://bucket/ucf101 --set storage_path=s3://bucket/runs
    python pipelines/ablation.py --config demo --resume   # continue the latest interrupted demo ablation
    ray job submit --working-dir . -- python pipelines/ablation.py --config demo

The manifest is prepared once and cached on the storage path. Each trial
trains one `TorchTrainer` and logs to an MLflow child run named
``<variant>-seed<seed>`` under the ablation's parent run. When the grid ends,
the parent run gets ``summary.csv``, ``summary.md`` and ``ablation_plot.png``.
Before Ray starts, the tracking store must respond and every ``s3://``
location (storage path, MLflow artifact root, dataset root) must pass the
storage preflight. Exit status: 0 when every trial finished, 1 when a trial
failed, the tracking store is unreachable or the preflight failed, 2 for an
invalid configuration, 130 when the ablation was stopped (Ctrl-C) before its
grid ended.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime, timezone

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

logger = logging.getLogger("stsep.pipelines.ablation")

# The shell's status for a run stopped with Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument(
        "--name", default=None,
        help="ablation name: Tune experiment under the storage path and MLflow tag "
        "(default: <config name>-<UTC time>; with --resume, the latest ablation of this config)",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted ablation; finished trials are not run again",
    )
    return parser.parse_args(argv)


def latest_ablation(storage_path: str, prefix: str) -> str | None:
    """Return the newest ablation name under `storage_path` that starts with `prefix`, if any."""
    import pyarrow.fs

    from stsep.storage import filesystem_for

    filesystem, root = filesystem_for(storage_path)
    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except OSError:
        return None
    names = sorted(
        entry.base_name for entry in entries
        if entry.type == pyarrow.fs.FileType.Directory and entry.base_name.startswith(f"{prefix}-")
    )
    return names[-1] if names else None


def cpus_needed(config) -> float:
    """Return the logical CPUs that `max_concurrent_trials` trials reserve at once, plus one for Ray Data tasks."""
    from stsep.training.tuning import TRAINABLE_CPUS

    resources, data = config.resources, config.data
    per_trial = (
        TRAINABLE_CPUS
        + resources.num_workers * resources.cpus_per_worker
        + 2 * data.decode_concurrency * data.decoder_cpus
    )
    return per_trial * (config.tune.max_concurrent_trials or 1) + 1


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    args = parse_args(argv)
    configure_logging()

    from stsep.config import ConfigError

    config = load_config_from_args(args)
    env_vars = export_s3_settings(config)
    ablation_id = args.name
    if args.resume and ablation_id is None:
        ablation_id = latest_ablation(config.storage_path, config.name)
        if ablation_id is None:
            config_error_exit(
                ConfigError(f"--resume found no ablation named {config.name}-* under {config.storage_path}; pass --name")
            )
    if ablation_id is None:
        ablation_id = f"{config.name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"

    from stsep.training.tuning import AblationContext, grid_points, load_ablation_config, run_grid, save_ablation_config

    if args.resume:
        stored = load_ablation_config(config.storage_path, ablation_id)
        if stored is None:
            config_error_exit(ConfigError(
                f"--resume found no saved config of ablation {ablation_id} under {config.storage_path}; "
                "check --name and storage_path"
            ))
        if args.overrides or args.smoke:
            logger.warning(
                "--resume continues %s with its saved config; --set and --smoke served only to find it "
                "(storage_path and s3.*), and its other settings are ignored", ablation_id,
            )
        config = stored
        env_vars = export_s3_settings(config)

    from stsep.tracking import (
        TrackingUnavailableError,
        check_tracking_store,
        find_or_create_ablation_run,
        list_trial_runs,
    )

    try:
        check_tracking_store(config.tracking.uri)
    except TrackingUnavailableError as error:
        logger.error("%s", error)
        return 1
    if open_experiment(config) is None:
        return 1

    from stsep.analysis.report import ReportError
    from stsep.analysis.summary import log_ablation_summary
    from stsep.training.trainer import describe_manifest, prepare_data

    started = time.monotonic()
    build_compiled_kernels()
    init_ray(address=args.ray_address, num_cpus=args.num_cpus, min_cpus=cpus_needed(config), env_vars=env_vars)
    prepare_data(config)
    if not args.resume:
        save_ablation_config(config, ablation_id)
    data = describe_manifest(config)
    logger.info(
        "Dataset %s: %d train and %d %s videos, %d classes; manifest %s",
        config.data.dataset, data.train_videos, data.eval_videos, data.eval_split, data.num_classes, data.manifest_path,
    )

    parent = find_or_create_ablation_run(
        tracking_uri=config.tracking.uri, experiment=config.tracking.experiment, ablation_id=ablation_id
    )
    parent.log_config(config.to_dict())
    parent.log_params({
        "grid.size": len(grid_points(config)),
        "grid.variants": list(config.grid.variants),
        "grid.seeds": list(config.grid.seeds),
        "num_classes": data.num_classes,
        "train_videos": data.train_videos,
    })
    context = AblationContext(
        config=config,
        ablation_id=ablation_id,
        data=data,
        tracking_uri=config.tracking.uri,
        experiment_id=parent.experiment_id,
        parent_run_id=parent.run_id,
    )

    try:
        results = run_grid(context, resume=args.resume)
    except BaseException:
        parent.finish("KILLED")
        raise
    failed = [result for result in results if result.error is not None]
    for result in failed:
        logger.error("Trial at %s failed: %s", result.path, str(result.error).splitlines()[0])
    # Tune returns normally after Ctrl-C and reports the stopped trials as
    # terminated, so count the trials whose MLflow runs ended instead.
    finished_runs = list_trial_runs(
        tracking_uri=config.tracking.uri, experiment_id=parent.experiment_id, ablation_id=ablation_id
    )
    finished = sum(1 for run in finished_runs if run.info.status == "FINISHED") + len(failed)
    if finished < len(grid_points(config)):
        parent.finish("KILLED")
        logger.warning(
            "Ablation %s stopped with %d of %d trials done; continue it with --resume --name %s",
            ablation_id, finished, len(grid_points(config)), ablation_id,
        )
        return EXIT_INTERRUPTED

    try:
        summary = log_ablation_summary(
            tracking_uri=config.tracking.uri, experiment_id=parent.experiment_id,
            ablation_id=ablation_id, parent_run_id=parent.run_id,
        )
    except ReportError as error:
        logger.error("No summary for ablation %s: %s", ablation_id, error)
        summary = None
    parent.log_metrics({"wall_time_s": time.monotonic() - started, "failed_trials": len(failed)}, step=0)
    parent.finish("FAILED" if failed else "FINISHED")

    if summary is not None:
        columns = ["variant", "seeds", "top1_mean", "top1_std", "top5_mean", "epochs"]
        logger.info("Summary of %s:\n%s", ablation_id, summary[columns].to_string(index=False))
    logger.info(
        "Ablation %s: %d trials, %d failed, %.1f min; MLflow experiment %s at %s (runs table: #/experiments/%s/runs)",
        ablation_id, len(results), len(failed), (time.monotonic() - started) / 60, config.tracking.experiment,
        config.tracking.uri, parent.experiment_id,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
