"""Load a trained model from a checkpoint directory, an s3:// URI or an MLflow run.

A checkpoint is the `checkpoint.pt` dict that training writes (model state,
resolved config, variant, number of classes, class names and the MLflow run
id). The source may be:

- a local checkpoint directory or `checkpoint.pt` file;
- an `s3://` URI of either;
- `runs:/<run_id>` or a bare 32-character run id, in which case the run's
  `checkpoints/best/checkpoint.pt` artifact is downloaded first;
- `runs:/<run_id>/<artifact path>` for another artifact of the run.

The model is rebuilt with `stsep.build_model` from the checkpoint's variant
and model config, and its weights are loaded strictly.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "BEST_CHECKPOINT_ARTIFACT",
    "LoadedCheckpoint",
    "load_trained_model",
    "resolve_checkpoint_source",
]

logger = logging.getLogger(__name__)

BEST_CHECKPOINT_ARTIFACT = "checkpoints/best/checkpoint.pt"
# MLflow run ids are uuid4 hex strings.
RUN_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
REQUIRED_KEYS = ("model", "config", "variant", "num_classes")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A rebuilt model and the facts of its checkpoint.

    Attributes:
        model: the network in eval mode, on the requested device.
        config: the resolved experiment config the model was trained with.
        variant: the variant name.
        num_classes: classes of the classifier head.
        class_names: names by class index (empty when the checkpoint has none).
        run_id: the MLflow run the checkpoint belongs to, if known.
        source: the source as given.
        epoch: finished epochs when the checkpoint was written.
        best_val_top1: best validation top-1 at that time, if recorded.
    """

    model: nn.Module
    config: Any
    variant: str
    num_classes: int
    class_names: tuple[str, ...]
    run_id: str | None
    source: str
    epoch: int
    best_val_top1: float | None


def resolve_checkpoint_source(
    source: str, *, tracking_uri: str | None = None, download_dir: str | Path | None = None
) -> tuple[str, str | None]:
    """Turn a checkpoint source into a loadable location and the MLflow run id it names.

    Returns:
        `(location, run_id)`: a local path or s3:// URI for
        `stsep.training.checkpoint.load_checkpoint`, and the run id when the
        source was an MLflow run (else None).

    Raises:
        FileNotFoundError: if the run has no such artifact.
    """
    text = str(source).strip()
    run_id, artifact_path = None, BEST_CHECKPOINT_ARTIFACT
    if text.startswith("runs:/"):
        parts = text[len("runs:/") :].strip("/").split("/", 1)
        run_id = parts[0]
        if len(parts) == 2 and parts[1]:
            artifact_path = parts[1]
    elif RUN_ID_PATTERN.fullmatch(text) and not Path(text).exists():
        run_id = text
    if run_id is None:
        return text, None

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    destination = str(download_dir) if download_dir is not None else tempfile.mkdtemp(prefix="stsep-eval-")
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=destination, tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as error:
        raise FileNotFoundError(
            f"could not download artifact {artifact_path!r} of run {run_id} from "
            f"{tracking_uri or 'the default tracking URI'}: {error}. "
            "Check the run id and --tracking-uri, or pass a checkpoint path"
        ) from error
    logger.info("downloaded %s of run %s to %s", artifact_path, run_id, local)
    return local, run_id


def load_trained_model(
    source: str, *, tracking_uri: str | None = None, device: torch.device | str = "cpu"
) -> LoadedCheckpoint:
    """Load a checkpoint from `source` and rebuild its model.

    Args:
        source: see the module docstring for the accepted forms.
        tracking_uri: MLflow tracking URI for run sources.
        device: where to put the model.

    Raises:
        FileNotFoundError: if the checkpoint does not exist.
        ValueError: if the checkpoint lacks the keys training writes.
    """
    from stsep import build_model
    from stsep.config import config_from_dict
    from stsep.training.checkpoint import load_checkpoint
    from stsep.training.loop import model_options

    # The downloaded copy of a run's checkpoint is only needed until it is loaded.
    with tempfile.TemporaryDirectory(prefix="stsep-eval-") as download_dir:
        location, run_id = resolve_checkpoint_source(source, tracking_uri=tracking_uri, download_dir=download_dir)
        state = load_checkpoint(location)
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(
            f"checkpoint {source} is missing {missing}; evaluation needs a checkpoint written by stsep training "
            f"with keys {list(REQUIRED_KEYS)}"
        )

    config = config_from_dict(state["config"], resolve_paths=False)
    model = build_model(
        state["variant"],
        int(state["num_classes"]),
        depth=config.model.depth,
        width=config.model.width,
        **model_options(config),
    )
    model.load_state_dict(state["model"], strict=True)
    model.to(device).eval()

    best = state.get("best_val_top1")
    loaded = LoadedCheckpoint(
        model=model,
        config=config,
        variant=str(state["variant"]),
        num_classes=int(state["num_classes"]),
        class_names=tuple(str(name) for name in state.get("class_names") or ()),
        run_id=run_id or state.get("mlflow_run_id"),
        source=str(source),
        epoch=int(state.get("epoch", 0)),
        best_val_top1=None if best is None else float(best),
    )
    logger.info(
        "loaded %s (%s, %d classes, epoch %d) from %s", loaded.variant, model.variant.stage_map,
        loaded.num_classes, loaded.epoch, source,
    )
    return loaded
