"""S3 settings and the clients built from them: boto3, pyarrow and MLflow.

Three libraries talk to S3 in this project, and each finds a custom endpoint
(an on-premises or other S3-compatible store) in its own way:

- boto3 (1.28 and later) reads ``AWS_ENDPOINT_URL_S3`` and ``AWS_ENDPOINT_URL``.
- ``pyarrow.fs.S3FileSystem(...)`` ignores both and needs
  ``endpoint_override``. ``pyarrow.fs.FileSystem.from_uri`` does read
  ``AWS_ENDPOINT_URL`` (checked on pyarrow 25.0.1), and Ray Train and Ray Data
  resolve ``s3://`` paths that way when given no filesystem.
- MLflow's S3 artifact repository reads ``MLFLOW_S3_ENDPOINT_URL`` and
  ``MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE``, and otherwise falls back to boto3's
  own lookup.

`S3Settings` is the one description of the store. The functions below turn it
into a client for each library, into the environment variables that Ray
workers and MLflow need, and into a `preflight` check that writes, reads back
and deletes one small object through every client before any training starts.
Credentials are never part of the settings: every client takes them from the
standard AWS chain (environment, shared files, instance role).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

__all__ = [
    "ADDRESSING_STYLES",
    "PreflightResult",
    "S3Settings",
    "StoragePreflightError",
    "boto3_client",
    "filesystem_for",
    "mlflow_env",
    "preflight",
    "pyarrow_filesystem",
    "ray_storage_filesystem",
    "redact",
    "runtime_env_vars",
    "split_s3_uri",
]

logger = logging.getLogger(__name__)

ADDRESSING_STYLES = ("auto", "path", "virtual")

# Variables that carry the settings to other processes. STSEP_S3_ADDRESSING_STYLE
# exists because boto3 reads the addressing style only from ~/.aws/config.
_ADDRESSING_STYLE_VAR = "STSEP_S3_ADDRESSING_STYLE"
_SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

# The preflight must fail within seconds on a wrong endpoint, so its clients
# try once and give up quickly instead of the libraries' default retries.
_PREFLIGHT_CONNECT_TIMEOUT_S = 3.0
_PREFLIGHT_READ_TIMEOUT_S = 10.0
_PREFLIGHT_MAX_ATTEMPTS = 1
_PREFLIGHT_PREFIX = ".stsep-preflight"


# ------------------------------------------------------------------- settings


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 store is and how to address it; never the credentials.

    Attributes:
        endpoint_url: Endpoint of an S3-compatible store, such as
            ``http://minio.internal:9000``; None for AWS S3 itself.
        region: Region name; None leaves it to each library's default lookup.
        addressing_style: ``path`` (``endpoint/bucket/key``, what most
            S3-compatible stores need), ``virtual`` (``bucket.endpoint/key``)
            or ``auto`` (each library's default).
        profile: Named profile of the shared AWS config files, or None.
    """

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parsed = urlparse(self.endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(
                    f"invalid S3 endpoint_url {redact(self.endpoint_url)!r}: expected "
                    "http://host[:port] or https://host[:port], for example http://127.0.0.1:9000"
                )
            if parsed.username or parsed.password:
                raise ValueError(
                    f"S3 endpoint_url {redact(self.endpoint_url)!r} contains credentials; remove "
                    "them and provide the keys through the standard AWS chain (environment or ~/.aws)"
                )
        if self.addressing_style not in ADDRESSING_STYLES:
            raise ValueError(
                f"invalid S3 addressing_style {self.addressing_style!r}; "
                f"expected one of {', '.join(ADDRESSING_STYLES)}"
            )
        for name in ("region", "profile"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"invalid S3 {name} {value!r}: expected a non-empty string or None")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Build settings from the environment variables the AWS tools use.

        The endpoint comes from ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or
        ``MLFLOW_S3_ENDPOINT_URL`` (first set wins), the region from
        ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, the addressing style from
        ``STSEP_S3_ADDRESSING_STYLE`` or ``MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE``,
        and the profile from ``AWS_PROFILE``.

        Args:
            environ: Mapping to read instead of ``os.environ``.
        """
        env = os.environ if environ is None else environ

        def first(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        return cls(
            endpoint_url=first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"),
            region=first("AWS_REGION", "AWS_DEFAULT_REGION"),
            addressing_style=first(_ADDRESSING_STYLE_VAR, "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE") or "auto",
            profile=first("AWS_PROFILE"),
        )

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | None, *, environ: Mapping[str, str] | None = None
    ) -> S3Settings:
        """Build settings from a config mapping, on top of `from_env`.

        Keys set to a value in ``config`` replace what the environment gives;
        keys that are absent or None keep it.

        Args:
            config: Mapping with any of the keys endpoint_url, region,
                addressing_style and profile; None means no overrides.
            environ: Mapping to read instead of ``os.environ``.

        Raises:
            ValueError: On an unknown key or an invalid value.
        """
        base = cls.from_env(environ)
        if config is None:
            return base
        if not isinstance(config, Mapping):
            raise ValueError(f"S3 settings must be a mapping, got {type(config).__name__}")
        allowed = [field.name for field in fields(cls)]
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise ValueError(f"unknown S3 setting(s) {unknown}; allowed keys: {', '.join(allowed)}")
        overrides = {key: value for key, value in config.items() if value is not None}
        return cls(**{**{name: getattr(base, name) for name in allowed}, **overrides})

    def describe_endpoint(self) -> str:
        """Return the endpoint for messages: the URL, or ``AWS S3 default``."""
        return self.endpoint_url or "AWS S3 default"


def _settings_or_env(settings: S3Settings | None) -> S3Settings:
    if settings is None:
        return S3Settings.from_env()
    if not isinstance(settings, S3Settings):
        raise TypeError(f"settings must be an S3Settings, got {type(settings).__name__}")
    return settings


# -------------------------------------------------------------------- clients


def boto3_client(
    settings: S3Settings | None = None,
    *,
    connect_timeout_s: float | None = None,
    read_timeout_s: float | None = None,
    max_attempts: int | None = None,
) -> Any:
    """Build a boto3 S3 client for the store the settings describe.

    With ``settings.endpoint_url`` None the client goes to AWS S3 even when
    ``AWS_ENDPOINT_URL`` is set, so all three libraries agree on the endpoint.

    Args:
        settings: Store description; None reads `S3Settings.from_env`.
        connect_timeout_s: Connection timeout; None keeps botocore's 60 s.
        read_timeout_s: Socket read timeout; None keeps botocore's 60 s.
        max_attempts: Total attempts per request, first one included; None
            keeps botocore's default.

    Returns:
        A ``botocore.client.S3`` client.
    """
    import boto3
    from botocore.config import Config

    settings = _settings_or_env(settings)
    options: dict[str, Any] = {
        "s3": {"addressing_style": settings.addressing_style},
        "ignore_configured_endpoint_urls": settings.endpoint_url is None,
    }
    if connect_timeout_s is not None:
        options["connect_timeout"] = connect_timeout_s
    if read_timeout_s is not None:
        options["read_timeout"] = read_timeout_s
    if max_attempts is not None:
        options["retries"] = {"mode": "standard", "max_attempts": max_attempts}
    session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    return session.client("s3", endpoint_url=settings.endpoint_url, config=Config(**options))


def pyarrow_filesystem(
    settings: S3Settings | None = None,
    *,
    connect_timeout_s: float | None = None,
    max_attempts: int | None = None,
) -> pafs.S3FileSystem:
    """Build a ``pyarrow.fs.S3FileSystem`` for the store the settings describe.

    The filesystem holds no keys: it resolves them on each process that uses
    it, so it can be pickled into a Ray ``RunConfig`` without the secret.
    pyarrow has no profile argument and takes the profile from ``AWS_PROFILE``,
    and with no custom endpoint it always uses virtual addressing.

    Args:
        settings: Store description; None reads `S3Settings.from_env`.
        connect_timeout_s: Connection timeout; None keeps the AWS SDK's default.
        max_attempts: Total attempts per request; None keeps pyarrow's 3.

    Raises:
        ValueError: When ``settings.profile`` differs from ``AWS_PROFILE`` in
            this process, since pyarrow would silently use another profile.
    """
    settings = _settings_or_env(settings)
    if settings.profile is not None and os.environ.get("AWS_PROFILE") != settings.profile:
        raise ValueError(
            f"S3 profile {settings.profile!r} is set but AWS_PROFILE is "
            f"{os.environ.get('AWS_PROFILE')!r}; pyarrow reads the profile only from AWS_PROFILE, "
            "so export it (os.environ.update(stsep.storage.runtime_env_vars(settings)))"
        )
    options: dict[str, Any] = {"force_virtual_addressing": settings.addressing_style == "virtual"}
    if settings.region is not None:
        options["region"] = settings.region
    if settings.endpoint_url is not None:
        parsed = urlparse(settings.endpoint_url)
        options["scheme"] = parsed.scheme
        options["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
    if connect_timeout_s is not None:
        options["connect_timeout"] = connect_timeout_s
    if max_attempts is not None:
        options["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts)
    return pafs.S3FileSystem(**options)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into the bucket and the key (``""`` for none).

    Raises:
        ValueError: When ``uri`` is not an ``s3://`` URI with a bucket.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ValueError(f"{uri!r} is not an s3:// URI; write it as s3://bucket/key")
    if not parsed.netloc:
        raise ValueError(f"S3 URI {uri!r} has no bucket; write it as s3://bucket/key")
    return parsed.netloc, parsed.path.strip("/")


def filesystem_for(uri: str, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """Resolve a local path, ``file://`` URI or ``s3://`` URI to a filesystem and a path.

    Args:
        uri: Location to resolve.
        settings: Store description for ``s3://``; None reads `S3Settings.from_env`.

    Returns:
        The filesystem and the path to pass to its methods: ``bucket/key`` for
        S3, an absolute path for local files.

    Raises:
        ValueError: On an empty location, an S3 URI without a bucket, or
            another scheme.
    """
    if not isinstance(uri, (str, os.PathLike)) or not str(uri).strip():
        raise ValueError(f"invalid storage location {uri!r}: expected a local path or an s3:// URI")
    uri = str(uri)
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        bucket, key = split_s3_uri(uri)
        return pyarrow_filesystem(settings), f"{bucket}/{key}".rstrip("/")
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), os.path.abspath(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise ValueError(f"unsupported storage scheme {parsed.scheme!r} in {uri!r}; use a local path or s3://")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def ray_storage_filesystem(
    storage_path: str, settings: S3Settings | None = None
) -> tuple[str, pafs.FileSystem | None]:
    """Return ``storage_path`` and ``storage_filesystem`` for a Ray ``RunConfig``.

    Ray expects the path without its scheme when it is given a filesystem, so
    for ``s3://bucket/runs`` this returns ``("bucket/runs", S3FileSystem)``.
    Local paths come back absolute, with no filesystem.

    Example:
        >>> path, filesystem = ray_storage_filesystem("s3://bucket/runs")  # doctest: +SKIP
        >>> RunConfig(storage_path=path, storage_filesystem=filesystem)  # doctest: +SKIP
    """
    filesystem, path = filesystem_for(storage_path, settings)
    if isinstance(filesystem, pafs.S3FileSystem):
        return path, filesystem
    return path, None


# ---------------------------------------------------------------- environment


def mlflow_env(settings: S3Settings | None = None) -> dict[str, str]:
    """Return the variables MLflow's S3 artifact store needs for these settings.

    Set them in every process that logs or serves artifacts: the driver, the
    Ray workers (see `runtime_env_vars`) and an ``mlflow server`` that proxies
    artifacts to S3.
    """
    settings = _settings_or_env(settings)
    env: dict[str, str] = {}
    if settings.endpoint_url is not None:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.endpoint_url
    if settings.addressing_style != "auto":
        env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] = settings.addressing_style
    return env


def runtime_env_vars(settings: S3Settings | None = None) -> dict[str, str]:
    """Return the non-secret variables that Ray trials and workers need.

    Pass them as ``runtime_env={"env_vars": ...}``. They let `S3Settings.from_env`
    on a worker rebuild the same settings, and let boto3, MLflow and the
    ``FileSystem.from_uri`` calls inside Ray find the same endpoint. Keys stay
    out: each node takes them from its own AWS chain (instance role, mounted
    secret or environment).
    """
    settings = _settings_or_env(settings)
    env = mlflow_env(settings)
    if settings.endpoint_url is not None:
        env["AWS_ENDPOINT_URL"] = settings.endpoint_url
    if settings.region is not None:
        env["AWS_REGION"] = settings.region
        env["AWS_DEFAULT_REGION"] = settings.region
    if settings.addressing_style != "auto":
        env[_ADDRESSING_STYLE_VAR] = settings.addressing_style
    if settings.profile is not None:
        env["AWS_PROFILE"] = settings.profile
    return env


# ------------------------------------------------------------------ redaction

_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")
_SIGNED_QUERY = re.compile(r"(?P<prefix>X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<prefix>(?:aws_secret_access_key|aws_session_token|secret_key|session_token)\s*[=:]\s*['\"]?)[^\s'\",}]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Replace secrets in ``text`` with ``***``.

    Covers the values of ``AWS_SECRET_ACCESS_KEY`` and the session token
    variables in this process, passwords in URLs, signed query parameters of
    presigned URLs and ``secret_key=...`` style assignments.
    """
    text = str(text)
    for name in _SECRET_VARS:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    text = _URL_PASSWORD.sub(r"\g<prefix>***@", text)
    text = _SIGNED_QUERY.sub(r"\g<prefix>***", text)
    return _SECRET_ASSIGNMENT.sub(r"\g<prefix>***", text)


# ------------------------------------------------------------------ preflight


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
        clients: Clients that wrote, read back and deleted a test object
            (or only listed, for a read-only location).
        elapsed_s: Wall time of the checks for this location, in seconds.
    """

    uri: str
    clients: tuple[str, ...]
    elapsed_s: float


def _reason(error: BaseException) -> str:
    """Name the cause of a client error in the words a user acts on."""
    text = f"{type(error).__name__}: {error}"
    lowered = text.lower()
    if "nosuchbucket" in lowered or "no_such_bucket" in lowered or "bucket does not exist" in lowered:
        return f"bucket not found; create it or fix the URI ({text})"
    if any(marker in lowered for marker in ("accessdenied", "access_denied", "forbidden", "403", "invalidaccesskeyid",
                                            "signaturedoesnotmatch")):
        return f"access denied; check the credentials in the AWS chain and the bucket policy ({text})"
    if any(marker in lowered for marker in ("could not connect", "network_connection", "connecttimeout",
                                            "connect timeout", "endpointconnectionerror", "resolve host")):
        return f"cannot reach the endpoint; check endpoint_url or AWS_ENDPOINT_URL ({text})"
    if "nocredentials" in lowered or "unable to locate credentials" in lowered:
        return f"no AWS credentials found in the environment, ~/.aws or an instance role ({text})"
    return text


def _one_line(text: str) -> str:
    return " ".join(redact(text).split())


class _Check:
    """The shared parts of one preflight location: URI, bucket, key and payload."""

    def __init__(self, uri: str, settings: S3Settings) -> None:
        self.uri = uri
        self.settings = settings
        self.bucket, self.prefix = split_s3_uri(uri)
        self.token = uuid.uuid4().hex
        self.relative_dir = f"{_PREFLIGHT_PREFIX}/{self.token}"
        self.key = "/".join(part for part in (self.prefix, self.relative_dir, "probe.txt") if part)
        self.payload = f"stsep storage preflight {self.token}\n".encode()

    def fail(self, client: str, action: str, error: BaseException | str) -> StoragePreflightError:
        reason = error if isinstance(error, str) else _reason(error)
        message = _one_line(
            f"storage preflight failed: {client} could not {action} s3://{self.bucket}/{self.key} "
            f"at {self.settings.describe_endpoint()}: {reason}"
        )
        return StoragePreflightError(message, client=client, bucket=self.bucket, uri=self.uri)


def _check_boto3(check: _Check, *, read_only: bool) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    action = "connect to"
    try:
        client = boto3_client(
            check.settings,
            connect_timeout_s=_PREFLIGHT_CONNECT_TIMEOUT_S,
            read_timeout_s=_PREFLIGHT_READ_TIMEOUT_S,
            max_attempts=_PREFLIGHT_MAX_ATTEMPTS,
        )
        action = "list"
        if read_only:
            client.list_objects_v2(Bucket=check.bucket, Prefix=check.prefix, MaxKeys=1)
            return
        action = "write"
        client.put_object(Bucket=check.bucket, Key=check.key, Body=check.payload)
        action = "read"
        body = client.get_object(Bucket=check.bucket, Key=check.key)["Body"].read()
        if body != check.payload:
            raise check.fail("boto3", "read", f"read {len(body)} bytes that differ from the {len(check.payload)} written")
        action = "delete"
        client.delete_object(Bucket=check.bucket, Key=check.key)
    except (BotoCoreError, ClientError) as error:
        raise check.fail("boto3", action, error) from None


def _check_pyarrow(check: _Check, *, read_only: bool) -> None:
    try:
        filesystem = pyarrow_filesystem(
            check.settings, connect_timeout_s=_PREFLIGHT_CONNECT_TIMEOUT_S, max_attempts=_PREFLIGHT_MAX_ATTEMPTS
        )
    except ValueError as error:
        raise check.fail("pyarrow", "connect to", str(error)) from None
    path = f"{check.bucket}/{check.key}"
    action = "list"
    try:
        if read_only:
            info = filesystem.get_file_info(check.bucket)
            if info.type == pafs.FileType.NotFound:
                raise check.fail("pyarrow", "list", "bucket not found; create it or fix the URI")
            return
        action = "write"
        with filesystem.open_output_stream(path) as stream:
            stream.write(check.payload)
        action = "read"
        with filesystem.open_input_stream(path) as stream:
            body = stream.read()
        if body != check.payload:
            raise check.fail("pyarrow", "read", f"read {len(body)} bytes that differ from the {len(check.payload)} written")
        action = "delete"
        filesystem.delete_file(path)
    except OSError as error:  # pyarrow raises OSError (and FileNotFoundError) for S3 errors
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
            f"{check.settings.describe_endpoint()!r}; {fix}",
        )
    style = os.environ.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "auto")
    if check.settings.addressing_style != "auto" and style != check.settings.addressing_style:
        raise check.fail(
            "mlflow",
            "use",
            f"MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE is {style!r} but the settings name "
            f"{check.settings.addressing_style!r}; {fix}",
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
            downloaded = repository.download_artifacts(f"{check.relative_dir}/probe.txt", dst_path=str(destination))
            body = Path(downloaded).read_bytes()
            if body != check.payload:
                raise check.fail("mlflow", "read", f"read {len(body)} bytes that differ from the {len(check.payload)} written")
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
    from botocore.exceptions import BotoCoreError, ClientError

    failed = False
    try:
        yield
    except StoragePreflightError:
        failed = True
        raise
    finally:
        prefix = "/".join(part for part in (check.prefix, check.relative_dir) if part) + "/"
        try:
            client = boto3_client(check.settings, connect_timeout_s=1.0, read_timeout_s=5.0, max_attempts=1)
            listing = client.list_objects_v2(Bucket=check.bucket, Prefix=prefix)
            for item in listing.get("Contents", []):
                client.delete_object(Bucket=check.bucket, Key=item["Key"])
        except (BotoCoreError, ClientError) as error:
            # After a failure the preflight error is what matters; only a
            # leftover after a passing check is worth a warning.
            if not failed:
                logger.warning("Storage preflight could not delete s3://%s/%s: %s", check.bucket, prefix,
                               _one_line(str(error)))


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
    back and delete it. Locations in ``read_only_uris`` (a dataset root) are
    only listed by boto3 and pyarrow. Local paths are skipped. The clients try
    once with short timeouts, so a wrong endpoint fails in seconds.

    Args:
        uris: Locations the run writes to.
        settings: Store description; None reads `S3Settings.from_env`.
        read_only_uris: Locations the run only reads.

    Returns:
        One `PreflightResult` per S3 location checked.

    Raises:
        StoragePreflightError: On the first failure, with a one-line message
            naming the client, the bucket, the endpoint and the cause, with
            secrets removed.
        ValueError: When a location is not a string or has an unsupported scheme.
    """
    settings = _settings_or_env(settings)
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

        check = _Check(uri, settings)
        start = time.monotonic()
        with _cleanup(check):
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
