"""S3 settings and the clients built from them: boto3, pyarrow and MLflow.

Three libraries talk to S3 in this project, and each finds a custom endpoint
(an on-premises or other S3-compatible store) in its own way. boto3 reads
``AWS_ENDPOINT_URL``. ``pyarrow.fs.S3FileSystem`` needs ``endpoint_override``.
MLflow's S3 artifact repository reads ``MLFLOW_S3_ENDPOINT_URL``. This package
is the one place that turns `S3Settings` into a client for each library, into
the environment variables for Ray workers and MLflow, and into a `preflight`
check that runs before any training.

Example:
    >>> settings = S3Settings.from_env()  # doctest: +SKIP
    >>> preflight(["s3://bucket/runs"], settings)  # doctest: +SKIP
    >>> path, filesystem = ray_storage_filesystem("s3://bucket/runs", settings)  # doctest: +SKIP
"""

from stsep.storage.clients import (
    boto3_client,
    filesystem_for,
    pyarrow_filesystem,
    ray_storage_filesystem,
    split_s3_uri,
)
from stsep.storage.preflight import PreflightResult, StoragePreflightError, preflight
from stsep.storage.settings import (
    ADDRESSING_STYLES,
    S3Settings,
    mlflow_env,
    redact,
    resolve_settings,
    runtime_env_vars,
)

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
    "resolve_settings",
    "runtime_env_vars",
    "split_s3_uri",
]
