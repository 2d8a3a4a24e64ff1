"""Storage preflight: prove that every S3 client can reach every location.

Before training starts, `preflight` writes one small object under each
``s3://`` location through boto3, pyarrow and MLflow's S3 artifact
repository, reads it back and deletes it. A wrong endpoint, a missing bucket
or missing permissions then fail in seconds with one line that names the
client, the bucket and the cause, instead of hours later in a trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from stsep.storage.clients import boto3_client, filesystem_for, pyarrow_filesystem, split_s3_uri
from stsep.storage.settings import S3Settings, redact, resolve_settings

__all__ = ["PreflightResult", "StoragePreflightError", "preflight"]

logger = logging.getLogger(__name__)

# The preflight must fail within seconds on a wrong endpoint, so its clients
# try once with short timeouts instead of the libraries' default retries.
_CONNECT_TIMEOUT_S = 3.0
_READ_TIMEOUT_S = 10.0
_MAX_ATTEMPTS = 1
_PROBE_DIR = ".stsep-preflight"

# Substrings of boto3, pyarrow and MLflow error messages, matched lowercased.
_UNREACHABLE_MARKERS = ("could not connect", "network_connection", "connecttimeout", "connect timeout",
                        "endpointconnectionerror", "resolve host")
_MISSING_BUCKET_MARKERS = ("nosuchbucket", "no_such_bucket", "bucket does not exist")
_DENIED_MARKERS = ("accessdenied", "access_denied", "forbidden", "(403)", "invalidaccesskeyid",
                   "signaturedoesnotmatch")
_NO_CREDENTIALS_MARKERS = ("nocredentials", "unable to locate credentials")
_TLS_MARKERS = ("sslerror", "ssl validation failed", "wrong_version_number", "certificate verify failed")


class StoragePreflightError(RuntimeError):
    """A storage client could not write, read or delete its test object.

    Attributes:
        client: ``boto3``, ``pyarrow`` or ``mlflow``.
        bucket: Bucket of the location that failed.
        uri: The location that failed.
    """

    def __init__(self, message: str, *, client: str, bucket: str, uri: str) -> None:
        super().__init__(message)
        self.client = client
        self.bucket = bucket
        self.uri = uri


@dataclass(frozen=True)
class PreflightResult:
    """One location that passed the preflight.

    Attributes:
        uri: The location checked.
        clients: Clients that wrote, read back and deleted a test object, or
            for a read-only location found objects under it.
        elapsed_s: Wall time of the checks for this location, in seconds.
    """

    uri: str
    clients: tuple[str, ...]
    elapsed_s: float


def _reason(error: BaseException) -> str:
    """Name the cause of a client error in the words a user acts on, then quote the error."""
    text = f"{type(error).__name__}: {error}"
    lowered = text.lower()
    if any(marker in lowered for marker in _TLS_MARKERS):
        return f"TLS failed, so check http versus https in endpoint_url and the store's certificate ({text})"
    if any(marker in lowered for marker in _UNREACHABLE_MARKERS):
        return f"cannot reach the endpoint, so check endpoint_url or AWS_ENDPOINT_URL ({text})"
    if any(marker in lowered for marker in _MISSING_BUCKET_MARKERS):
        return f"bucket not found, so create it or fix the URI ({text})"
    if any(marker in lowered for marker in _DENIED_MARKERS):
        return f"access denied, so check the credentials in the AWS chain and the bucket policy ({text})"
    if any(marker in lowered for marker in _NO_CREDENTIALS_MARKERS):
        return f"no AWS credentials found in the environment, ~/.aws or an instance role ({text})"
    return text


def _mismatch(body: bytes, payload: bytes) -> str:
    return f"read {len(body)} bytes that differ from the {len(payload)} bytes written"


def _one_line(text: str) -> str:
    return " ".join(redact(text).split())


class _Check:
    """The shared parts of one preflight location: URI, bucket, key and payload."""

    def __init__(self, uri: str, settings: S3Settings, *, read_only: bool = False) -> None:
        self.uri = uri
        self.settings = settings
        self.read_only = read_only
        self.bucket, self.prefix = split_s3_uri(uri)
        self.token = uuid.uuid4().hex
        self.relative_dir = f"{_PROBE_DIR}/{self.token}"
        self.key = "/".join(part for part in (self.prefix, self.relative_dir, "probe.txt") if part)
        self.payload = f"stsep storage preflight {self.token}\n".encode()
        # boto3 writes first, so until its write succeeds no client has left
        # anything to clean up, and the endpoint may not answer at all.
        self.written = False

    def fail(self, client: str, action: str, error: BaseException | str) -> StoragePreflightError:
        reason = error if isinstance(error, str) else _reason(error)
        # A read-only check lists the location itself and writes no probe.
        target = f"s3://{self.bucket}/{self.prefix}" if self.read_only else f"s3://{self.bucket}/{self.key}"
        message = _one_line(
            f"storage preflight failed: {client} could not {action} {target} "
            f"at {self.settings.describe_endpoint()}: {reason}"
        )
        return StoragePreflightError(message, client=client, bucket=self.bucket, uri=self.uri)


def _check_boto3(check: _Check, *, read_only: bool) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    action = "connect to"
    try:
        client = boto3_client(
            check.settings,
            connect_timeout_s=_CONNECT_TIMEOUT_S,
            read_timeout_s=_READ_TIMEOUT_S,
            max_attempts=_MAX_ATTEMPTS,
        )
        action = "list"
        if read_only:
            listing = client.list_objects_v2(Bucket=check.bucket, Prefix=check.prefix, MaxKeys=1)
            if not listing.get("KeyCount"):
                raise check.fail("boto3", "list", "no objects there, so check the URI and that the data was uploaded")
            return
        action = "write"
        client.put_object(Bucket=check.bucket, Key=check.key, Body=check.payload)
        check.written = True
        action = "read"
        body = client.get_object(Bucket=check.bucket, Key=check.key)["Body"].read()
        if body != check.payload:
            raise check.fail("boto3", "read", _mismatch(body, check.payload))
        action = "delete"
        client.delete_object(Bucket=check.bucket, Key=check.key)
    except (BotoCoreError, ClientError) as error:
        raise check.fail("boto3", action, error) from None


def _check_pyarrow(check: _Check, *, read_only: bool) -> None:
    # NOTE: pyarrow ignores request_timeout on Linux, so a store that accepted
    # pyarrow's connection and never answered would block here. boto3 checks
    # the same endpoint first with a read timeout, which catches a silent store.
    try:
        filesystem = pyarrow_filesystem(
            check.settings, connect_timeout_s=_CONNECT_TIMEOUT_S, max_attempts=_MAX_ATTEMPTS
        )
    except ValueError as error:
        raise check.fail("pyarrow", "connect to", str(error)) from None
    path = f"{check.bucket}/{check.key}"
    action = "list"
    try:
        if read_only:
            location = f"{check.bucket}/{check.prefix}".rstrip("/")
            if filesystem.get_file_info(location).type == pafs.FileType.NotFound:
                raise check.fail("pyarrow", "list", "no objects there, so check the URI and that the data was uploaded")
            return
        action = "write"
        with filesystem.open_output_stream(path) as stream:
            stream.write(check.payload)
        action = "read"
        with filesystem.open_input_stream(path) as stream:
            body = stream.read()
        if body != check.payload:
            raise check.fail("pyarrow", "read", _mismatch(body, check.payload))
        action = "delete"
        filesystem.delete_file(path)
    except OSError as error:  # pyarrow raises OSError, FileNotFoundError included, for S3 errors
        raise check.fail("pyarrow", action, error) from None


def _mlflow_endpoint_in_env() -> str | None:
    """Return the endpoint MLflow's S3 client will use in this process."""
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _check_mlflow(check: _Check) -> None:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    # MLflow builds its client from this process's environment, not from the
    # settings, so a mismatch here means artifacts would go to another store.
    fix = "set os.environ.update(stsep.storage.mlflow_env(settings)) in this process"
    endpoint = _mlflow_endpoint_in_env()
    expected = check.settings.endpoint_url
    if (endpoint or "").rstrip("/") != (expected or "").rstrip("/"):
        raise check.fail(
            "mlflow",
            "use",
            f"MLflow's S3 endpoint in this process is {endpoint or 'AWS S3 default'!r} but the settings name "
            f"{check.settings.describe_endpoint()!r}, so {fix}",
        )
    style = os.environ.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "auto")
    if check.settings.addressing_style != "auto" and style != check.settings.addressing_style:
        raise check.fail(
            "mlflow",
            "use",
            f"MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE is {style!r} but the settings name "
            f"{check.settings.addressing_style!r}, so {fix}",
        )

    artifact_root = check.uri.rstrip("/")
    repository = get_artifact_repository(artifact_root)
    action = "write"
    try:
        with tempfile.TemporaryDirectory(prefix="stsep-preflight-") as local_dir:
            source = Path(local_dir) / "probe.txt"
            source.write_bytes(check.payload)
            repository.log_artifact(str(source), check.relative_dir)
            action = "read"
            destination = Path(local_dir) / "downloaded"
            destination.mkdir()
            downloaded = repository.download_artifacts(
                f"{check.relative_dir}/probe.txt", dst_path=str(destination)
            )
            body = Path(downloaded).read_bytes()
            if body != check.payload:
                raise check.fail("mlflow", "read", _mismatch(body, check.payload))
            action = "delete"
            repository.delete_artifacts(check.relative_dir)
    except (Boto3Error, BotoCoreError, ClientError, MlflowException, OSError) as error:
        raise check.fail("mlflow", action, error) from None


@contextlib.contextmanager
def _cleanup(check: _Check) -> Iterator[None]:
    """Delete every object a check left under its probe prefix, on success or failure.

    pyarrow leaves an empty directory marker when it deletes the probe, and a
    failed check may stop between its write and its delete.
    """
    failed = False
    try:
        yield
    except StoragePreflightError:
        failed = True
        raise
    finally:
        if check.written:
            _delete_probes(check, failed=failed)


def _delete_probes(check: _Check, *, failed: bool) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    prefix = "/".join(part for part in (check.prefix, check.relative_dir) if part) + "/"
    try:
        client = boto3_client(check.settings, connect_timeout_s=1.0, read_timeout_s=5.0, max_attempts=1)
        listing = client.list_objects_v2(Bucket=check.bucket, Prefix=prefix)
        for item in listing.get("Contents", []):
            client.delete_object(Bucket=check.bucket, Key=item["Key"])
    except (BotoCoreError, ClientError) as error:
        # After a failure the preflight error is what the caller needs, so
        # only a leftover after a passing check gets a warning.
        if not failed:
            logger.warning(
                "Storage preflight could not delete s3://%s/%s: %s", check.bucket, prefix, _one_line(str(error))
            )


def preflight(
    uris: Sequence[str],
    settings: S3Settings | None = None,
    *,
    read_only_uris: Sequence[str] = (),
) -> list[PreflightResult]:
    """Check every S3 location with every client before training starts.

    For each ``s3://`` location in ``uris`` (checkpoint storage, MLflow
    artifact roots), boto3, pyarrow and MLflow's S3 artifact repository in
    turn write one small object under ``<uri>/.stsep-preflight/``, read it
    back and delete it. For locations in ``read_only_uris`` (a dataset root),
    boto3 and pyarrow only check that objects exist there. Local paths are
    skipped. The clients try once with short timeouts, so a wrong endpoint
    fails in seconds.

    Args:
        uris: Locations the run writes to.
        settings: Store description. None reads `S3Settings.from_env`.
        read_only_uris: Locations the run only reads.

    Returns:
        One `PreflightResult` per S3 location checked.

    Raises:
        StoragePreflightError: On the first failure, with a one-line message
            naming the client, the bucket, the endpoint and the cause, with
            secrets removed.
        ValueError: When a location is not a string or has an unsupported scheme.
    """
    settings = resolve_settings(settings)
    for group in (uris, read_only_uris):
        if isinstance(group, (str, bytes)) or not isinstance(group, Sequence):
            raise ValueError(f"preflight locations must be a list of strings, got {group!r}")

    results = []
    for uri, read_only in [*((uri, False) for uri in uris), *((uri, True) for uri in read_only_uris)]:
        if not isinstance(uri, str) or not uri.strip():
            raise ValueError(f"invalid storage location {uri!r}: expected a local path or an s3:// URI")
        if urlparse(uri).scheme != "s3":
            filesystem_for(uri)  # rejects unsupported schemes
            logger.debug("Storage preflight skips local location %s", uri)
            continue

        check = _Check(uri, settings, read_only=read_only)
        start = time.monotonic()
        with contextlib.nullcontext() if read_only else _cleanup(check):
            _check_boto3(check, read_only=read_only)
            _check_pyarrow(check, read_only=read_only)
            if not read_only:
                _check_mlflow(check)
        clients = ("boto3", "pyarrow") if read_only else ("boto3", "pyarrow", "mlflow")
        result = PreflightResult(uri=uri, clients=clients, elapsed_s=time.monotonic() - start)
        logger.info(
            "Storage preflight passed for %s at %s (%s) in %.2f s",
            uri, settings.describe_endpoint(), ", ".join(clients), result.elapsed_s,
        )
        results.append(result)
    return results

