"""Shared command-line helpers of the training entry points.

Argument parsing for ``--config``, ``--set`` and ``--smoke``, logging setup
for the driver and for every Ray worker, the storage preflight, and starting
or joining Ray. An invalid configuration exits with status 2 and one line on
stderr, before any Ray work starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = [
    "EXIT_CONFIG_ERROR",
    "add_config_arguments",
    "build_compiled_kernels",
    "check_storage",
    "config_error_exit",
    "configure_logging",
    "export_s3_settings",
    "init_ray",
    "load_config_from_args",
    "open_experiment",
    "worker_logging_hook",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run from a checkout without `pip install -e .`: import `stsep` from the
# repository, and let `init_ray` hand the same path to the Ray workers.
STSEP_FROM_CHECKOUT = importlib.util.find_spec("stsep") is None
if STSEP_FROM_CHECKOUT:
    sys.path.insert(0, str(REPO_ROOT))

EXIT_CONFIG_ERROR = 2
# Ray's job supervisor hands the submitted job's config, runtime environment
# included, to the driver in this variable (Ray 2.60).
JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger("stsep.pipelines")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--set``, ``--smoke``, ``--ray-address`` and ``--num-cpus`` to `parser`."""
    parser.add_argument(
        "--config", default="demo",
        help="preset name (demo, ucf101, hmdb51, ssv2) or path to a YAML file (default: demo)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value with a dotted key, e.g. --set train.epochs=3 (repeatable)",
    )
    parser.add_argument(
        "--smoke", action="store_true",
        help="shrink the run to a few minutes on two CPU cores (tiny model, few clips, one epoch)",
    )
    parser.add_argument(
        "--ray-address", default=None,
        help="Ray cluster to join; 'local' always starts a new local instance "
        "(default: RAY_ADDRESS, else join or start a local instance)",
    )
    parser.add_argument(
        "--num-cpus", type=int, default=None,
        help="CPUs of a newly started local Ray instance (default: all of this machine's)",
    )


def load_config_from_args(args: argparse.Namespace, *, extra_overrides: Sequence[str] = ()) -> Any:
    """Load the config named by the parsed arguments; exit with status 2 on a `ConfigError`."""
    from stsep.config import ConfigError, load_config

    try:
        return load_config(args.config, overrides=[*args.overrides, *extra_overrides], smoke=args.smoke)
    except ConfigError as error:
        config_error_exit(error)


def config_error_exit(error: Exception) -> None:
    """Print ``error`` as one line on stderr and exit with status 2."""
    message = " ".join(str(error).split())
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(EXIT_CONFIG_ERROR)


def configure_logging(level: str | int = "INFO") -> None:
    """Send log records of ``stsep`` to stderr with timestamps (entry points only)."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("stsep").setLevel(level)


def worker_logging_hook() -> None:
    """Configure logging in every Ray worker process (a ``worker_process_setup_hook``)."""
    import logging as worker_logging
    import sys as worker_sys

    package_logger = worker_logging.getLogger("stsep")
    if not package_logger.handlers:
        handler = worker_logging.StreamHandler(worker_sys.stderr)
        handler.setFormatter(worker_logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        package_logger.addHandler(handler)
        package_logger.setLevel(worker_logging.INFO)
        package_logger.propagate = False


def export_s3_settings(config: Any) -> dict[str, str]:
    """Point every S3 client of this process at the store of the config's ``s3`` section.

    The settings (the ``s3`` section on top of the AWS variables) go into
    this process's environment, so MLflow and ``pyarrow.fs.FileSystem.from_uri``
    find the same endpoint as boto3.

    Returns:
        The non-secret variables that Ray workers need (pass them to `init_ray`).
    """
    from stsep.storage import runtime_env_vars

    settings = config.s3_settings()
    env_vars = runtime_env_vars(settings)
    # boto3 and `S3Settings.from_env` prefer the S3-specific variable, so a
    # stale one from the shell must not outlive the configured endpoint.
    if settings.endpoint_url is not None and "AWS_ENDPOINT_URL_S3" in os.environ:
        env_vars["AWS_ENDPOINT_URL_S3"] = settings.endpoint_url
    os.environ.update(env_vars)
    return env_vars


def check_storage(config: Any, *, artifact_location: str | None = None) -> bool:
    """Preflight every S3 location of a run before Ray starts; log one line and return False on failure.

    boto3, pyarrow and MLflow each write, read and delete one object under
    the storage path and the MLflow artifact root, and boto3 and pyarrow
    list the dataset root. Call `export_s3_settings` first.

    Args:
        config: The resolved `ExperimentConfig`.
        artifact_location: The MLflow experiment's artifact root; checked when it is ``s3://``.
    """
    from stsep.storage import StoragePreflightError, preflight

    written = [config.storage_path]
    if artifact_location is not None and artifact_location.startswith("s3://"):
        written.append(artifact_location)
    read_only = []
    if config.data.root is not None:
        read_only.append(config.data.root)
    if config.data.dataset == "manifest" and config.data.manifest_path is not None:
        read_only.append(config.data.manifest_path)
    try:
        preflight(written, config.s3_settings(), read_only_uris=read_only)
    except StoragePreflightError as error:
        logger.error("%s", error)
        return False
    return True


def open_experiment(config: Any) -> str | None:
    """Preflight the run's storage, then find or create its MLflow experiment.

    The preflight comes first, so a mistyped ``tracking.artifact_location``
    leaves no experiment bound to it. Call `export_s3_settings` first.

    Returns:
        The experiment id, or None after logging why the preflight failed.

    Raises:
        SystemExit: With status 2 when ``tracking.artifact_location``
            differs from the artifact location of the existing experiment,
            which MLflow cannot change.
    """
    from stsep.config import ConfigError
    from stsep.tracking import call_with_retry, get_or_create_experiment, tracking_client

    tracking = config.tracking
    client = tracking_client(tracking.uri)
    existing = call_with_retry(client.get_experiment_by_name, tracking.experiment, description="get experiment")
    configured = tracking.artifact_location
    if existing is not None and configured is not None:
        if existing.artifact_location.rstrip("/") != configured.rstrip("/"):
            config_error_exit(ConfigError(
                f"invalid value {configured!r} for tracking.artifact_location: MLflow experiment "
                f"{tracking.experiment!r} already stores its artifacts at {existing.artifact_location!r} and cannot "
                "move them; set tracking.experiment to a new name, or drop tracking.artifact_location"
            ))
    artifact_location = existing.artifact_location if existing is not None else configured
    if not check_storage(config, artifact_location=artifact_location):
        return None
    return get_or_create_experiment(client, tracking.experiment, artifact_location=configured)


def build_compiled_kernels() -> None:
    """Build the compiled LIF kernel in the driver, before Ray starts.

    Workers on this machine then load it from the cache instead of building
    it at once in every trial, and a build that fails warns here once.
    """
    from stsep.neurons import fused

    start = time.monotonic()
    if fused.load() is not None and time.monotonic() - start > 1.0:
        logger.info("Built the compiled LIF kernel in %.0f s; later runs load it from the cache",
                    time.monotonic() - start)


def init_ray(
    *,
    address: str | None,
    num_cpus: int | None,
    min_cpus: float = 1.0,
    env_vars: dict[str, str] | None = None,
) -> None:
    """Start or join Ray, with `worker_logging_hook` in every worker.

    Inside a job submitted with ``ray job submit``, ``RAY_ADDRESS`` names the
    cluster and the job's runtime environment (working dir) is merged with
    the hook given here.

    Args:
        address: Cluster address, or ``local`` for a new private instance.
            None takes ``RAY_ADDRESS``, else joins the instance that ``ray
            start`` left on this machine, else starts a new one.
        num_cpus: Logical CPUs of a new local instance.
        min_cpus: Logical CPUs the run needs at once. A new local instance
            without `num_cpus` gets at least this many, even above the
            machine's core count, because Ray Data's decoding and shuffle
            tasks are light next to training but each reserves its CPUs.
        env_vars: Variables every Ray worker needs, such as the S3 settings
            from `export_s3_settings`.
    """
    import ray
    from ray import cloudpickle

    # Ship the hook by value: workers may not have this directory on their path.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    runtime_env: dict[str, Any] = {"worker_process_setup_hook": worker_logging_hook}
    worker_env = dict(env_vars or {})
    if STSEP_FROM_CHECKOUT:
        worker_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    worker_env = _without_job_env_vars(worker_env)
    if worker_env:
        runtime_env["env_vars"] = worker_env

    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, runtime_env=runtime_env)
    elif address == "local":
        # A private instance skips the dashboard, which saves seconds and a port.
        cpus = num_cpus or _cpus_needed(min_cpus)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env)
        _warn_oversubscribed(cpus, explicit=num_cpus is not None)
    else:
        _start_or_join(num_cpus, min_cpus, runtime_env)
    resources = ray.cluster_resources()
    logger.info("Ray cluster: %s CPUs, %s GPUs", resources.get("CPU", 0), resources.get("GPU", 0))


def _start_or_join(num_cpus: int | None, min_cpus: float, runtime_env: dict[str, Any]) -> None:
    """Start Ray as ``ray.init()`` would, or join the instance that ``ray start`` left on this machine."""
    import ray

    cpus = num_cpus or _cpus_needed(min_cpus)
    try:
        ray.init(num_cpus=cpus, runtime_env=runtime_env)
    except ValueError as error:
        # Ray found a running instance, whose CPU count cannot be changed.
        if "existing cluster" not in str(error):
            raise
        ray.init(runtime_env=runtime_env)
        logger.info("Joined the Ray instance running on this machine; pass --ray-address local for a private one")
        if num_cpus is not None:
            logger.warning("--num-cpus %d is ignored: the running instance keeps its own CPU count", num_cpus)
        return
    _warn_oversubscribed(cpus, explicit=num_cpus is not None)


def _cpus_needed(min_cpus: float) -> int:
    """Return the logical CPUs of a new local instance: the cores, or `min_cpus` where that is more."""
    return max(os.cpu_count() or 1, math.ceil(min_cpus))


def _warn_oversubscribed(num_cpus: int, *, explicit: bool) -> None:
    """Warn when Ray was given more logical CPUs than cores without being asked to."""
    cores = os.cpu_count() or 1
    if num_cpus > cores and not explicit:
        logger.warning(
            "Started local Ray with %d logical CPUs on %d cores so that the trials, their training workers "
            "and their decoders fit at once; pass --num-cpus to change it", num_cpus, cores,
        )


def _without_job_env_vars(env_vars: dict[str, str]) -> dict[str, str]:
    """Drop the variables that the submitted job's runtime environment already sets.

    Ray refuses to merge a job's runtime environment with the one given to
    ``ray.init`` when both set the same variable, so the job's value wins.
    """
    raw = os.environ.get(JOB_CONFIG_VAR)
    if not raw:
        return env_vars
    job_env = (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}
    for key in sorted(set(env_vars) & set(job_env)):
        if job_env[key] != env_vars[key]:
            logger.warning(
                "The job's runtime environment sets %s, so the config's value %r is ignored", key, env_vars[key]
            )
    return {key: value for key, value in env_vars.items() if key not in job_env}
