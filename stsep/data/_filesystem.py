"""Path helpers that treat local paths and ``s3://`` URIs alike.

Dataset roots, manifests and videos may live on a local disk or in an
S3-compatible object store. This module resolves either to a
``pyarrow.fs.FileSystem`` and offers the few operations the data layer needs:
join, list, stat and read.
"""

from __future__ import annotations

import logging
import os
import posixpath
from urllib.parse import urlparse

import pyarrow.fs as pafs

from stsep import storage

__all__ = [
    "exists",
    "file_size",
    "is_dir",
    "is_remote",
    "join",
    "list_files",
    "open_input",
    "read_bytes",
    "read_text",
    "resolve",
]

logger = logging.getLogger(__name__)

_REMOTE_SCHEMES = ("s3",)


def is_remote(uri: str) -> bool:
    """Return whether ``uri`` names an object in a remote store (``s3://``)."""
    return urlparse(uri).scheme in _REMOTE_SCHEMES


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Resolve a local path or ``s3://`` URI to a filesystem and a path in it.

    S3 settings (endpoint from ``AWS_ENDPOINT_URL``, region, addressing
    style) come from :func:`stsep.storage.filesystem_for`.

    Args:
        uri: Local path (absolute or relative) or ``s3://bucket/key`` URI.

    Returns:
        The filesystem and the path to pass to its methods (``bucket/key`` for
        S3, an absolute path for local files).
    """
    return storage.filesystem_for(uri)


def join(root: str, *parts: str) -> str:
    """Join path parts onto a local path or ``s3://`` URI."""
    if is_remote(root):
        return posixpath.join(root.rstrip("/"), *parts)
    return os.path.join(root, *parts)


def exists(uri: str) -> bool:
    """Return whether a file or directory exists at ``uri``."""
    filesystem, path = resolve(uri)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    """Return whether ``uri`` is a directory (or a non-empty S3 prefix)."""
    filesystem, path = resolve(uri)
    return filesystem.get_file_info(path).type == pafs.FileType.Directory


def file_size(uri: str) -> int | None:
    """Return the size in bytes of the file at ``uri``, or None if there is none."""
    filesystem, path = resolve(uri)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    return int(info.size)


def list_files(root: str, *, recursive: bool = True) -> list[str]:
    """List the files under a directory or S3 prefix, as URIs like ``root``.

    Returns:
        Sorted paths, each ``root`` joined with the file's relative path.

    Raises:
        ValueError: When ``root`` does not exist.
    """
    filesystem, base = resolve(root)
    if filesystem.get_file_info(base).type != pafs.FileType.Directory:
        raise ValueError(f"directory not found: {root!r}")
    selector = pafs.FileSelector(base, recursive=recursive)
    files = []
    for info in filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        relative = posixpath.relpath(info.path, base) if is_remote(root) else os.path.relpath(info.path, base)
        files.append(join(root, relative))
    return sorted(files)


def open_input(uri: str):
    """Open a file for reading; returns a binary file object."""
    filesystem, path = resolve(uri)
    return filesystem.open_input_file(path)


def read_bytes(uri: str) -> bytes:
    """Read a whole file from a local path or ``s3://`` URI."""
    with open_input(uri) as stream:
        return stream.readall()


def read_text(uri: str, *, encoding: str = "utf-8") -> str:
    """Read a whole text file from a local path or ``s3://`` URI."""
    return read_bytes(uri).decode(encoding)
