"""Clients for S3 built from `S3Settings`: boto3, pyarrow and Ray storage.

boto3 (1.28 and later) finds a custom endpoint in ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``. ``pyarrow.fs.S3FileSystem(...)`` ignores both and needs
``endpoint_override``, although ``pyarrow.fs.FileSystem.from_uri`` reads
``AWS_ENDPOINT_URL`` (both checked on pyarrow 25.0.1). The builders here pass
the endpoint explicitly, so every client reaches the store the settings name.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from stsep.storage.settings import S3Settings, resolve_settings

__all__ = [
    "boto3_client",
    "filesystem_for",
    "pyarrow_filesystem",
    "ray_storage_filesystem",
    "split_s3_uri",
]

logger = logging.getLogger(__name__)



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
        settings: Store description. None reads `S3Settings.from_env`.
        connect_timeout_s: Connection timeout. None keeps botocore's 60 s.
        read_timeout_s: Socket read timeout. None keeps botocore's 60 s.
        max_attempts: Total attempts per request, the first one included.
            None keeps botocore's default.

    Returns:
        A ``botocore.client.S3`` client.
    """
    import boto3
    from botocore.config import Config

    settings = resolve_settings(settings)
    options: dict[str, Any] = {
        "s3": {"addressing_style": settings.addressing_style},
        "ignore_configured_endpoint_urls": settings.endpoint_url is None,
    }
    if connect_timeout_s is not None:
        options["connect_timeout"] = connect_timeout_s
    if read_timeout_s is not None:
        options["read_timeout"] = read_timeout_s
    if max_attempts is not None:
        options["retries"] = {"mode": "standard", "total_max_attempts": max_attempts}
    session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    return session.client("s3", endpoint_url=settings.endpoint_url, config=Config(**options))


def pyarrow_filesystem(
    settings: S3Settings | None = None,
    *,
    connect_timeout_s: float | None = None,
    max_attempts: int | None = None,
) -> pafs.S3FileSystem:
    """Build a ``pyarrow.fs.S3FileSystem`` for the store the settings describe.

    The filesystem stores no keys. Each process that uses it resolves them
    through the AWS chain, so it can be pickled into a Ray ``RunConfig``
    without the secret. pyarrow has no profile argument and reads the profile
    from ``AWS_PROFILE``. With no custom endpoint it always uses virtual
    addressing.

    Args:
        settings: Store description. None reads `S3Settings.from_env`.
        connect_timeout_s: Connection timeout. None keeps the AWS SDK's default.
        max_attempts: Total attempts per request. None keeps pyarrow's 3.

    Raises:
        ValueError: When ``settings.profile`` differs from ``AWS_PROFILE`` in
            this process, since pyarrow would silently use another profile.
    """
    settings = resolve_settings(settings)
    if settings.profile is not None and os.environ.get("AWS_PROFILE") != settings.profile:
        raise ValueError(
            f"S3 profile {settings.profile!r} is set but AWS_PROFILE is "
            f"{os.environ.get('AWS_PROFILE')!r}, and pyarrow reads the profile only from AWS_PROFILE. "
            "Export it, for example with os.environ.update(stsep.storage.runtime_env_vars(settings))"
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
        raise ValueError(f"{uri!r} is not an s3:// URI: write it as s3://bucket/key")
    if not parsed.netloc:
        raise ValueError(f"S3 URI {uri!r} has no bucket: write it as s3://bucket/key")
    return parsed.netloc, parsed.path.strip("/")


def filesystem_for(uri: str, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """Resolve a local path, ``file://`` URI or ``s3://`` URI to a filesystem and a path.

    Args:
        uri: Location to resolve.
        settings: Store description for ``s3://``. None reads `S3Settings.from_env`.

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
        raise ValueError(f"unsupported storage scheme {parsed.scheme!r} in {uri!r}: use a local path or s3://")
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
