"""Training checkpoints: one ``checkpoint.pt`` file in a Ray Train checkpoint directory.

The file holds a dict with the unwrapped model's ``state_dict`` and the
optimizer, scheduler and gradient-scaler states, ``epoch`` (the number of
finished epochs), ``best_val_top1``, the resolved ``config`` as a plain dict,
``variant``, ``num_classes``, ``class_names`` and ``mlflow_run_id``. It is
written into a fresh temporary directory and only then handed to
``ray.train.report``, so storage never holds a half-written checkpoint.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "write_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def write_checkpoint(state: Mapping[str, Any], *, directory: str | Path | None = None) -> Path:
    """Write `state` to ``<directory>/checkpoint.pt`` and return the directory.

    Args:
        state: The checkpoint dict (see the module docstring).
        directory: Target directory; a new temporary directory when None.
    """
    target = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="stsep-ckpt-"))
    target.mkdir(parents=True, exist_ok=True)
    partial = target / (CHECKPOINT_FILE + ".partial")
    torch.save(dict(state), partial)
    partial.replace(target / CHECKPOINT_FILE)
    return target


def load_checkpoint(source: Any) -> dict[str, Any]:
    """Load a checkpoint dict from a directory, a ``checkpoint.pt`` path, an ``s3://`` URI or a `ray.train.Checkpoint`.

    Raises:
        FileNotFoundError: When no ``checkpoint.pt`` exists at `source`.
    """
    if hasattr(source, "as_directory"):
        with source.as_directory() as directory:
            return load_checkpoint(directory)
    text = str(source)
    if "://" in text:
        return _load_remote(text)
    path = Path(text)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT_FILE} at {text}; pass a checkpoint directory or file")
    return torch.load(path, map_location="cpu", weights_only=False)


def _load_remote(uri: str) -> dict[str, Any]:
    import pyarrow.fs

    from stsep.storage import filesystem_for

    filesystem, path = filesystem_for(uri)
    if not path.endswith(".pt"):
        path = path.rstrip("/") + "/" + CHECKPOINT_FILE
    info = filesystem.get_file_info(path)
    if info.type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(f"no {CHECKPOINT_FILE} at {uri}; pass a checkpoint directory or file")
    with filesystem.open_input_stream(path) as stream:
        payload = stream.read()
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
