"""MLflow tracking for ablations: parent and child runs, retries and buffering.

One MLflow experiment contains the ablations of one configuration name. Each
ablation gets a parent run (tag ``stsep.role = ablation``) and each trial a
child run (tag ``stsep.role = trial``, run name ``<variant>-seed<seed>``).
Runs are found again by their tags, so a resumed ablation or a restarted
trial continues its run instead of creating a second one.

Every call to the tracking store goes through `call_with_retry`, which retries
transient failures (a locked SQLite database, a tracking server that does not
answer) with exponential backoff. `RunLogger` buffers metrics while the store
is unreachable and flushes them when it answers again. Parameters are
flattened, stripped of secret-looking keys and URL credentials, and cut to
MLflow's length limits; the full resolved configuration is always logged as
an artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Final, Iterator, Mapping, TypeVar

import yaml

__all__ = [
    "ABLATION_TAG",
    "MAX_PARAM_KEY_LENGTH",
    "MAX_PARAM_VALUE_LENGTH",
    "ROLE_TAG",
    "TRIAL_TAG",
    "RetryPolicy",
    "RunLogger",
    "TrackingUnavailableError",
    "call_with_retry",
    "check_tracking_store",
    "find_or_create_ablation_run",
    "find_or_create_trial_run",
    "flatten_params",
    "get_or_create_experiment",
    "is_secret_key",
    "list_trial_runs",
    "redact",
    "redact_config",
    "sanitize_params",
    "tracking_client",
]

logger = logging.getLogger(__name__)

ROLE_TAG: Final[str] = "stsep.role"
ABLATION_TAG: Final[str] = "stsep.ablation"
TRIAL_TAG: Final[str] = "stsep.trial"
PARENT_TAG: Final[str] = "mlflow.parentRunId"

# MLflow 3 limits (mlflow.utils.validation): a param value of at most 6000
# characters, a key of at most 250, and at most 100 params or 1000 metrics in
# one log_batch request.
MAX_PARAM_VALUE_LENGTH: Final[int] = 6000
MAX_PARAM_KEY_LENGTH: Final[int] = 250
MAX_PARAMS_PER_BATCH: Final[int] = 100
MAX_METRICS_PER_BATCH: Final[int] = 1000

SECRET_KEY_PATTERN: Final[re.Pattern[str]] = re.compile(
    r"secret|token|password|passwd|credential|private|(^|[._\-])key($|[._\-])|api_?key|access_?key", re.IGNORECASE
)
# Characters MLflow accepts in param and metric keys.
INVALID_KEY_CHARACTERS: Final[re.Pattern[str]] = re.compile(r"[^A-Za-z0-9_\-. /]")

# Error texts of failures that a later attempt may not see again.
TRANSIENT_MARKERS: Final[tuple[str, ...]] = (
    "database is locked",
    "database table is locked",
    "max retries exceeded",
    "connection refused",
    "connection reset",
    "connection aborted",
    "remote end closed",
    "timed out",
    "temporarily unavailable",
    "503",
    "502",
    "504",
)

T = TypeVar("T")


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking store cannot be reached."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for tracking calls.

    Attributes:
        attempts: Tries in total, including the first.
        base_delay_s: Wait before the second try; doubles after each failure.
        max_delay_s: Upper bound of one wait.
    """

    attempts: int = 8
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0


# A short policy for calls inside the training loop: buffered metrics are
# retried at the next epoch, so one call need not wait long.
QUICK_RETRY: Final[RetryPolicy] = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=2.0)
# For the final flush of a run: waits about five minutes in total.
PATIENT_RETRY: Final[RetryPolicy] = RetryPolicy(attempts=25, base_delay_s=1.0, max_delay_s=15.0)


def configure_http_client() -> None:
    """Shorten MLflow's own HTTP retries, unless the user set them.

    MLflow retries a failed HTTP request 7 times with a backoff factor of 2 by
    default, which blocks a training step for minutes while a server is down.
    `call_with_retry` and `RunLogger` do the retrying here instead.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def is_transient(error: BaseException) -> bool:
    """Return True when `error` looks like a failure that a retry can get past."""
    if isinstance(error, (ConnectionError, TimeoutError, socket.timeout)):
        return True
    text = f"{type(error).__name__}: {error}".lower()
    if "operationalerror" in text:
        return True
    return any(marker in text for marker in TRANSIENT_MARKERS)


def call_with_retry(
    function: Callable[..., T],
    *args: Any,
    description: str,
    policy: RetryPolicy = RetryPolicy(),
    **kwargs: Any,
) -> T:
    """Call `function`, retrying transient tracking failures with backoff.

    Args:
        function: The tracking call.
        description: What the call does, for the warning logged on each retry.
        policy: Number of tries and backoff.

    Raises:
        The last error when every try failed or the error is not transient.
    """
    delay = policy.base_delay_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return function(*args, **kwargs)
        except Exception as error:  # MLflow, SQLAlchemy and requests raise many types.
            if not is_transient(error) or attempt == policy.attempts:
                raise
            logger.warning(
                "MLflow call failed (%s, try %d of %d), retrying in %.1f s: %s",
                description, attempt, policy.attempts, delay, _first_line(error),
            )
            time.sleep(delay * (1.0 + 0.25 * random.random()))
            delay = min(delay * 2.0, policy.max_delay_s)
    raise AssertionError("unreachable")


def check_tracking_store(tracking_uri: str, *, timeout_s: float = 10.0) -> None:
    """Fail at once when the tracking store cannot be reached.

    For an HTTP server, ``GET /health`` must respond within `timeout_s`. For a
    SQLite store, the database's directory must be writable.

    Raises:
        TrackingUnavailableError: With the URI (credentials removed) and the cause.
    """
    shown = redact(tracking_uri)
    scheme = urllib.parse.urlparse(tracking_uri).scheme
    if scheme in ("http", "https"):
        url = tracking_uri.rstrip("/") + "/health"
        try:
            urllib.request.urlopen(url, timeout=timeout_s)
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise TrackingUnavailableError(
                    f"MLflow tracking server {shown} returned HTTP {error.code} for /health"
                ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout) as error:
            raise TrackingUnavailableError(
                f"MLflow tracking server {shown} is unreachable ({_first_line(error)}); "
                "start it or set tracking.uri / MLFLOW_TRACKING_URI to a reachable store"
            ) from None
    elif scheme == "sqlite":
        path = Path(tracking_uri[len("sqlite:///"):])
        directory = path.parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise TrackingUnavailableError(f"MLflow SQLite store {shown}: directory {directory} is not writable")


# ------------------------------------------------------------------- params


def is_secret_key(key: str) -> bool:
    """Return True for keys that may hold a secret (``*secret*``, ``*token*``, ``*password*``, ``*key*``)."""
    return bool(SECRET_KEY_PATTERN.search(key))


def redact(value: str) -> str:
    """Remove the user and password part of a URL (``scheme://user:pass@host``)."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", value)


def flatten_params(config: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def sanitize_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Make params safe to log: no secrets, valid keys, values within MLflow's limits.

    Keys that look like secrets are dropped, and URL credentials in values are
    removed. Keys longer than `MAX_PARAM_KEY_LENGTH` are cut and given a hash
    suffix so they stay distinct. Values longer than `MAX_PARAM_VALUE_LENGTH`
    are cut and end in ``...``.
    """
    clean: dict[str, str] = {}
    for key, value in params.items():
        key = str(key)
        if is_secret_key(key):
            continue
        key = INVALID_KEY_CHARACTERS.sub("_", key)
        if len(key) > MAX_PARAM_KEY_LENGTH:
            digest = hashlib.sha1(key.encode()).hexdigest()[:8]
            key = f"{key[: MAX_PARAM_KEY_LENGTH - 9]}-{digest}"
        text = redact(_param_text(value))
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
        clean[key] = text
    return clean


def redact_config(config: Any) -> Any:
    """Return a copy of a plain config with secret-looking keys and URL credentials removed."""
    if isinstance(config, Mapping):
        return {key: redact_config(value) for key, value in config.items() if not is_secret_key(str(key))}
    if isinstance(config, (list, tuple)):
        return [redact_config(item) for item in config]
    if isinstance(config, str):
        return redact(config)
    return config


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple, Mapping)):
        return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
    return "null" if value is None else str(value)


# ----------------------------------------------------------------- runs


def get_or_create_experiment(client: Any, name: str, *, artifact_location: str | None = None) -> str:
    """Return the id of experiment `name`, creating it if needed (safe when two processes race).

    Args:
        client: An `MlflowClient`.
        name: Experiment name.
        artifact_location: Artifact root for a new experiment; None leaves it
            to the tracking store. An existing experiment keeps its own root,
            with a warning when it differs.
    """
    experiment = call_with_retry(client.get_experiment_by_name, name, description="get experiment")
    if experiment is None:
        try:
            return call_with_retry(
                client.create_experiment, name, artifact_location=artifact_location, description="create experiment"
            )
        except Exception:  # Another process created it first: read it back.
            experiment = call_with_retry(client.get_experiment_by_name, name, description="get experiment")
            if experiment is None:
                raise
    if artifact_location is not None and experiment.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
        logger.warning(
            "MLflow experiment %s keeps its artifact location %s, not %s; MLflow cannot move it, so set "
            "tracking.experiment to a new name to use the new location",
            name, experiment.artifact_location, artifact_location,
        )
    return experiment.experiment_id


def find_or_create_ablation_run(
    *,
    tracking_uri: str,
    experiment: str,
    ablation_id: str,
) -> "RunLogger":
    """Find the parent run of ablation `ablation_id` by its tags, or create it.

    Returns:
        A `RunLogger` for the parent run, marked running.
    """
    client = tracking_client(tracking_uri)
    experiment_id = get_or_create_experiment(client, experiment)
    filter_string = f"tags.`{ROLE_TAG}` = 'ablation' and tags.`{ABLATION_TAG}` = '{_quote(ablation_id)}'"
    runs = call_with_retry(
        client.search_runs, [experiment_id], filter_string=filter_string, description="search ablation run"
    )
    if runs:
        run_id = runs[0].info.run_id
        call_with_retry(client.update_run, run_id, status="RUNNING", description="reopen ablation run")
        logger.info("Continuing MLflow ablation run %s (%s)", run_id, ablation_id)
    else:
        run = call_with_retry(
            client.create_run,
            experiment_id,
            run_name=ablation_id,
            tags={ROLE_TAG: "ablation", ABLATION_TAG: ablation_id},
            description="create ablation run",
        )
        run_id = run.info.run_id
        logger.info("Created MLflow ablation run %s (%s) in experiment %s", run_id, ablation_id, experiment)
    return RunLogger(tracking_uri=tracking_uri, run_id=run_id, experiment_id=experiment_id)


def find_or_create_trial_run(
    *,
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str | None,
    ablation_id: str,
    trial_key: str,
    run_name: str,
    run_id: str | None = None,
) -> "RunLogger":
    """Find a trial's child run (by `run_id` or by tags) or create it under the parent run.

    Args:
        run_id: The run id stored in the trial's checkpoint, when it has one.
        trial_key: Unique name of the trial in its ablation (tag ``stsep.trial``).
        run_name: Display name, ``<variant>-seed<seed>``.
    """
    client = tracking_client(tracking_uri)
    if run_id is None:
        filter_string = (
            f"tags.`{ABLATION_TAG}` = '{_quote(ablation_id)}' and tags.`{TRIAL_TAG}` = '{_quote(trial_key)}'"
        )
        runs = call_with_retry(
            client.search_runs, [experiment_id], filter_string=filter_string, description="search trial run"
        )
        run_id = runs[0].info.run_id if runs else None
    if run_id is not None:
        call_with_retry(client.update_run, run_id, status="RUNNING", description="reopen trial run")
        logger.info("Continuing MLflow run %s for trial %s", run_id, trial_key)
    else:
        tags = {ROLE_TAG: "trial", ABLATION_TAG: ablation_id, TRIAL_TAG: trial_key}
        if parent_run_id is not None:
            tags[PARENT_TAG] = parent_run_id
        run = call_with_retry(
            client.create_run,
            experiment_id,
            run_name=run_name,
            tags=tags,
            description="create trial run",
        )
        run_id = run.info.run_id
        logger.info("Created MLflow run %s for trial %s", run_id, trial_key)
    return RunLogger(tracking_uri=tracking_uri, run_id=run_id, experiment_id=experiment_id)


def list_trial_runs(*, tracking_uri: str, experiment_id: str, ablation_id: str) -> list[Any]:
    """Return the child runs of one ablation (MLflow `Run` objects)."""
    client = tracking_client(tracking_uri)
    filter_string = f"tags.`{ROLE_TAG}` = 'trial' and tags.`{ABLATION_TAG}` = '{_quote(ablation_id)}'"
    return call_with_retry(
        client.search_runs, [experiment_id], filter_string=filter_string, max_results=10_000,
        description="list trial runs",
    )


class RunLogger:
    """Writes to one MLflow run, retrying transient failures and buffering metrics.

    Metrics that cannot be written (the tracking server is down) stay in a
    buffer and go out with the next call or with `flush`. One warning is
    logged per outage. Params already present on the run are skipped, so a
    resumed run can log its params again.
    """

    def __init__(self, *, tracking_uri: str, run_id: str, experiment_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._client = tracking_client(tracking_uri)
        self._pending: list[Any] = []
        self._outage_warned = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (sanitized); keys the run already has are left as they are."""
        from mlflow.entities import Param

        clean = sanitize_params(params)
        existing = self._run().data.params
        new = [Param(key, value) for key, value in clean.items() if key not in existing]
        for start in range(0, len(new), MAX_PARAMS_PER_BATCH):
            call_with_retry(
                self._client.log_batch, self.run_id, params=new[start : start + MAX_PARAMS_PER_BATCH],
                description="log params",
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (secret-looking keys are dropped)."""
        from mlflow.entities import RunTag

        clean = sanitize_params(tags)
        items = [RunTag(key, value) for key, value in clean.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            call_with_retry(
                self._client.log_batch, self.run_id, tags=items[start : start + MAX_PARAMS_PER_BATCH],
                description="set tags",
            )

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Queue metrics for `step` and try to write every queued metric."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        for key, value in metrics.items():
            if value is None:
                continue
            self._pending.append(Metric(INVALID_KEY_CHARACTERS.sub("_", key), float(value), timestamp, step))
        self.flush(policy=QUICK_RETRY, raise_on_failure=False)

    def flush(self, *, policy: RetryPolicy = PATIENT_RETRY, raise_on_failure: bool = True) -> bool:
        """Write queued metrics.

        Returns:
            True when the queue is empty afterwards.

        Raises:
            TrackingUnavailableError: When `raise_on_failure` and metrics remain queued.
        """
        while self._pending:
            batch = self._pending[:MAX_METRICS_PER_BATCH]
            try:
                call_with_retry(self._client.log_batch, self.run_id, metrics=batch, policy=policy,
                                description="log metrics")
            except Exception as error:
                if not is_transient(error):
                    raise
                if raise_on_failure:
                    raise TrackingUnavailableError(
                        f"could not write {len(self._pending)} metrics to MLflow run {self.run_id} at "
                        f"{redact(self.tracking_uri)}: {_first_line(error)}"
                    ) from error
                if not self._outage_warned:
                    logger.warning(
                        "MLflow store %s unreachable, keeping %d metrics to send later: %s",
                        redact(self.tracking_uri), len(self._pending), _first_line(error),
                    )
                    self._outage_warned = True
                return False
            del self._pending[: len(batch)]
        if self._outage_warned:
            logger.warning("MLflow store %s reachable again; queued metrics sent", redact(self.tracking_uri))
            self._outage_warned = False
        return True

    @property
    def pending_metrics(self) -> int:
        """Number of metrics waiting to be written."""
        return len(self._pending)

    def log_artifact(self, local_path: str | os.PathLike[str], *, artifact_path: str | None = None) -> None:
        """Upload one file or directory as an artifact."""
        call_with_retry(
            self._client.log_artifact, self.run_id, str(local_path), artifact_path,
            description=f"log artifact {Path(local_path).name}",
        )

    def log_text(self, text: str, *, artifact_file: str) -> None:
        """Upload `text` as the artifact `artifact_file`."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory, Path(artifact_file).name)
            path.write_text(text)
            parent = str(Path(artifact_file).parent)
            self.log_artifact(path, artifact_path=None if parent == "." else parent)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Log a config as flattened params and as the artifact ``config.yaml``."""
        self.log_params(flatten_params(config))
        self.log_text(yaml.safe_dump(redact_config(config), sort_keys=False), artifact_file="config.yaml")

    def finish(self, status: str = "FINISHED") -> None:
        """Flush queued metrics and mark the run FINISHED, FAILED or KILLED."""
        try:
            self.flush()
        finally:
            call_with_retry(self._client.set_terminated, self.run_id, status, description="end run")

    def _run(self) -> Any:
        return call_with_retry(self._client.get_run, self.run_id, description="get run")


_INITIALIZED_STORES: set[str] = set()


def tracking_client(tracking_uri: str) -> Any:
    """Return an `MlflowClient` for `tracking_uri`, opening a SQLite store under a file lock the first time."""
    from mlflow.tracking import MlflowClient

    configure_http_client()
    if not tracking_uri.startswith("sqlite:") or tracking_uri in _INITIALIZED_STORES:
        return MlflowClient(tracking_uri=tracking_uri)
    with _sqlite_store_lock(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri)
        call_with_retry(client.search_experiments, max_results=1, description="open tracking store")
    _INITIALIZED_STORES.add(tracking_uri)
    return client


@contextlib.contextmanager
def _sqlite_store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<database>.lock`` while a process first opens a SQLite store.

    MLflow creates or migrates the tables of a SQLite store when a client
    first opens it. Two processes doing that at once fail with alembic errors
    and lose their runs (seen with MLflow 3.17 and three processes starting on
    an empty store), so the first open of each process is serialized.
    """
    import fcntl

    lock_path = Path(tracking_uri[len("sqlite:///"):] + ".lock")
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
