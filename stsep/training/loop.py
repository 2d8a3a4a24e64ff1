"""The Ray Train loop of one trial: DDP training, evaluation, checkpoints and tracking.

`train_loop_per_worker` runs on every Ray Train worker. Each epoch it trains
on the worker's shard of the ``train`` dataset, evaluates on its shard of
``val``, reports metrics and a checkpoint with ``ray.train.report``, and
(rank 0 only) logs to the trial's MLflow run. A restarted worker group picks
up ``ray.train.get_checkpoint()`` and continues with the next epoch.

Step parity: DDP hangs when one worker runs a step that another does not.
``streaming_split(equal=True)`` gives workers equal row counts, but not
always equal batch counts. So each step starts with an all-reduce of "has a
batch" over the workers, and the epoch ends for all of them as soon as one
runs out, after at most ``steps_per_epoch`` steps. Leftover batches are
drained without training so the next epoch starts on a clean split.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from ray.data.collate_fn import NumpyBatchCollateFn
from torch import nn

from stsep.config import ExperimentConfig, config_from_dict
from stsep.data.transforms import to_model_input
from stsep.training.checkpoint import load_checkpoint, write_checkpoint
from stsep.training.evaluate import EvalResult, evaluate
from stsep.training.optim import build_optimizer, build_scheduler
from stsep.training.recorder import TrialRecorder, TrialTracking

__all__ = [
    "FAULT_EXIT_AFTER_EPOCH_ENV",
    "FAULT_MARKER_ENV",
    "ClipCollate",
    "LoopSpec",
    "collate_clips",
    "resolve_amp_dtype",
    "model_options",
    "train_loop_per_worker",
]

logger = logging.getLogger(__name__)

# Test hook: rank 0 exits (os._exit) once after reporting this epoch's
# checkpoint, when the marker file named by FAULT_MARKER_ENV does not exist yet.
FAULT_EXIT_AFTER_EPOCH_ENV = "STSEP_FAULT_EXIT_AFTER_EPOCH"
FAULT_MARKER_ENV = "STSEP_FAULT_MARKER"


@dataclass(frozen=True)
class LoopSpec:
    """Everything one trial's workers need, rebuilt from the plain dict that crosses the Ray boundary.

    Attributes:
        config: The resolved experiment config.
        variant: Variant name.
        seed: Trial seed.
        num_classes: Classes in the manifest.
        class_names: Class names by label.
        steps_per_epoch: Optimizer steps per epoch (train clips // global batch size).
        tracking: MLflow run coordinates of the trial, or None to log nothing.
        skip_counters: Skip-counter actor names by split.
    """

    config: ExperimentConfig
    variant: str
    seed: int
    num_classes: int
    class_names: tuple[str, ...]
    steps_per_epoch: int
    tracking: TrialTracking | None
    skip_counters: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """Return the plain dict passed as ``train_loop_config``."""
        return {
            "config": self.config.to_dict(),
            "variant": self.variant,
            "seed": self.seed,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "steps_per_epoch": self.steps_per_epoch,
            "tracking": None if self.tracking is None else self.tracking.to_dict(),
            "skip_counters": dict(self.skip_counters),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "LoopSpec":
        """Rebuild a spec from `to_dict` output."""
        return cls(
            config=config_from_dict(raw["config"], resolve_paths=False),
            variant=raw["variant"],
            seed=int(raw["seed"]),
            num_classes=int(raw["num_classes"]),
            class_names=tuple(raw["class_names"]),
            steps_per_epoch=int(raw["steps_per_epoch"]),
            tracking=None if raw.get("tracking") is None else TrialTracking.from_dict(raw["tracking"]),
            skip_counters=dict(raw.get("skip_counters") or {}),
        )


def model_options(config: ExperimentConfig) -> dict[str, Any]:
    """Map the model section of `config` to `stsep.build_model` keyword options."""
    model = config.model
    return {
        "tau": model.tau,
        "v_threshold": model.v_threshold,
        "v_reset": model.v_reset,
        "soft_reset": model.reset_mode == "soft",
        "detach_reset": model.detach_reset,
        "learnable_tau": model.learnable_tau,
        "surrogate": model.surrogate,
        "alpha": model.surrogate_alpha,
        "ds": model.stsep_ds,
        "dc": model.stsep_dc,
        "lam": model.stsep_lambda,
        "learnable_lam": model.learnable_lambda,
        "fusion": model.fusion,
    }


def resolve_amp_dtype(setting: str) -> torch.dtype:
    """Resolve ``train.amp_dtype``: ``auto`` is bfloat16 where the GPU supports it, else float16."""
    if setting == "bfloat16":
        return torch.bfloat16
    if setting == "float16":
        return torch.float16
    if setting != "auto":
        raise ValueError(f"invalid amp dtype {setting!r}: expected auto, bfloat16 or float16")
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def collate_clips(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Turn a Ray Data batch into tensors: clip uint8 ``[B, T, H, W, 3]``, label ``[B]``, video ids as strings."""
    return {
        "clip": torch.from_numpy(np.array(batch["clip"], dtype=np.uint8)),  # a writable copy
        "label": torch.from_numpy(np.array(batch["label"], dtype=np.int64)),
        "video_id": [str(value) for value in batch["video_id"]],
    }


class ClipCollate(NumpyBatchCollateFn):
    """`collate_clips` in the callable-class form that ``iter_torch_batches`` expects since Ray 2.47.

    Ray pins only batches made of tensors alone, and these carry video ids,
    so with ``pin_memory`` the clips and labels are pinned here, in Ray's
    collate threads, for asynchronous copies to the GPU.
    """

    def __init__(self, *, pin_memory: bool = False) -> None:
        super().__init__()
        self.pin_memory = pin_memory

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Collate one batch with `collate_clips`, pinning its tensors when asked."""
        collated = collate_clips(batch)
        if self.pin_memory:
            collated["clip"] = collated["clip"].pin_memory()
            collated["label"] = collated["label"].pin_memory()
        return collated


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Train one variant for the configured epochs; the function given to `TorchTrainer`."""
    import ray.train
    import ray.train.torch

    from stsep import build_model

    spec = LoopSpec.from_dict(loop_config)
    config = spec.config
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    use_gpu = device.type == "cuda"
    use_amp = use_gpu and config.train.amp
    amp_dtype = resolve_amp_dtype(config.train.amp_dtype) if use_amp else torch.float32
    if use_gpu:
        # Every step has the same input shape, so cuDNN's autotuner pays off after the first.
        torch.backends.cudnn.benchmark = True
    per_worker_batch = config.train.global_batch_size // world_size

    # Same initial weights on every worker (DDP also broadcasts rank 0's).
    torch.manual_seed(spec.seed)
    model = build_model(
        spec.variant, spec.num_classes, depth=config.model.depth, width=config.model.width, **model_options(config)
    )
    num_params = sum(parameter.numel() for parameter in model.parameters())
    if use_gpu and config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    raw_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    optimizer = build_optimizer(raw_model, train=config.train)
    total_steps = config.train.epochs * spec.steps_per_epoch
    scheduler = build_scheduler(
        optimizer, warmup_steps=config.train.warmup_epochs * spec.steps_per_epoch, total_steps=total_steps
    )
    # bfloat16 keeps float32's exponent range, so only float16 needs loss scaling.
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)

    # Resume from the latest reported checkpoint (a restarted worker group or a resumed trial).
    finished_epochs, best_top1, run_id = 0, -1.0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        finished_epochs = int(state["epoch"])
        best_top1 = float(state["best_val_top1"])
        run_id = state.get("mlflow_run_id")
        if rank == 0:
            logger.info("Resuming %s-seed%d after epoch %d (best val top-1 %.4f)",
                        spec.variant, spec.seed, finished_epochs, best_top1)
    # Distinct, reproducible randomness per worker and epoch.
    torch.manual_seed(spec.seed * 1000 + rank + 7919 * finished_epochs)

    recorder = None
    if rank == 0 and spec.tracking is not None:
        recorder = TrialRecorder.start(tracking=spec.tracking, run_id=run_id)
        recorder.log_setup(config=config, variant=spec.variant, seed=spec.seed, num_params=num_params)
        run_id = recorder.run_id

    def autocast() -> Any:
        if use_amp:
            return torch.autocast(device_type="cuda", dtype=amp_dtype)
        return contextlib.nullcontext()

    def to_input(clips: torch.Tensor) -> torch.Tensor:
        frames = to_model_input(clips)  # [B, T, 3, H, W]
        return frames

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    status = "FAILED"
    try:
        for epoch in range(finished_epochs + 1, config.train.epochs + 1):
            train_metrics = _train_one_epoch(
                model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, criterion=criterion,
                batches=train_shard.iter_torch_batches(
                    batch_size=per_worker_batch, drop_last=True, collate_fn=ClipCollate(pin_memory=use_gpu), prefetch_batches=2
                ),
                steps_per_epoch=spec.steps_per_epoch, device=device, to_input=to_input, autocast=autocast,
                grad_clip_norm=config.train.grad_clip_norm, epoch=epoch, epochs=config.train.epochs,
                log_every_steps=config.train.log_every_steps, rank=rank,
            )
            result = evaluate(
                raw_model,
                val_shard.iter_torch_batches(batch_size=per_worker_batch, collate_fn=ClipCollate(pin_memory=use_gpu), prefetch_batches=2),
                num_classes=spec.num_classes, device=device, to_input=to_input, autocast=autocast,
            )
            improved = result.top1 > best_top1
            if improved:
                best_top1 = result.top1
            metrics = {
                "epoch": epoch,
                **train_metrics,
                **result.metrics("val"),
                "best_val_top1": best_top1,
                "lr": scheduler.get_last_lr()[0],
                "num_params": num_params,
            }
            if rank == 0:
                logger.info(
                    "%s-seed%d epoch %d/%d: train loss %.4f, val top-1 %.4f, top-5 %.4f, %.1f clips/s, data wait %.0f%%",
                    spec.variant, spec.seed, epoch, config.train.epochs, metrics["train_loss"], result.top1,
                    result.top5, metrics["clips_per_second"], 100 * metrics["data_wait_fraction"],
                )
            state = {
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "best_val_top1": best_top1,
                "config": config.to_dict(),
                "variant": spec.variant,
                "seed": spec.seed,
                "num_classes": spec.num_classes,
                "class_names": list(spec.class_names),
                "mlflow_run_id": run_id,
            }
            _report(metrics, state=state, rank=rank, recorder=recorder, epoch=epoch, skip_counters=spec.skip_counters,
                    best=result if improved else None, class_names=spec.class_names)
            _maybe_inject_fault(epoch=epoch, rank=rank)
        status = "FINISHED"
    finally:
        if recorder is not None:
            recorder.log_unreadable(spec.skip_counters)
            recorder.finish(status)


def _train_one_epoch(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    batches: Any,
    steps_per_epoch: int,
    device: torch.device,
    to_input: Any,
    autocast: Any,
    grad_clip_norm: float | None,
    epoch: int,
    epochs: int,
    log_every_steps: int,
    rank: int,
) -> dict[str, float]:
    """Run one epoch of training steps with step parity across workers; return metrics summed over workers."""
    model.train()
    iterator: Iterator[dict[str, Any]] = iter(batches)
    loss_sum, correct, clips, wait_s = 0.0, 0, 0, 0.0
    started = time.perf_counter()
    steps = 0
    for step in range(1, steps_per_epoch + 1):
        wait_started = time.perf_counter()
        batch = next(iterator, None)
        wait_s += time.perf_counter() - wait_started
        if not _all_workers_have(batch is not None, device=device):
            break

        clips_uint8 = batch["clip"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        with autocast():
            logits = model(to_input(clips_uint8))  # [B, num_classes]
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        steps = step
        loss_sum += float(loss.detach()) * labels.numel()
        correct += int((logits.detach().argmax(dim=1) == labels).sum())
        clips += labels.numel()
        if rank == 0 and step % log_every_steps == 0:
            elapsed = time.perf_counter() - started
            logger.info("epoch %d/%d step %d/%d: loss %.4f, %.1f clips/s on rank 0, data wait %.0f%%",
                        epoch, epochs, step, steps_per_epoch, float(loss), clips / elapsed, 100 * wait_s / elapsed)
    elapsed = time.perf_counter() - started

    # Drain what is left of this worker's shard so the next epoch starts cleanly.
    leftover = sum(1 for _ in iterator)
    if leftover and rank == 0:
        logger.debug("drained %d leftover batches after %d steps", leftover, steps)

    totals = _sum_over_workers([loss_sum, correct, clips, wait_s, elapsed, steps], device=device)
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    total_clips = max(totals[2], 1.0)
    return {
        "train_loss": totals[0] / total_clips,
        "train_top1": totals[1] / total_clips,
        "train_clips": totals[2],
        "train_steps": totals[5] / world_size,
        "clips_per_second": totals[2] / max(totals[4] / world_size, 1e-9),
        "data_wait_fraction": totals[3] / max(totals[4], 1e-9),
    }


def _all_workers_have(has_batch: bool, *, device: torch.device) -> bool:
    """Return True when every worker has a batch for this step (an all-reduce MIN of a flag)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return has_batch
    flag = torch.tensor([1 if has_batch else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _sum_over_workers(values: list[float], *, device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def _report(
    metrics: dict[str, float],
    *,
    state: dict[str, Any],
    rank: int,
    recorder: TrialRecorder | None,
    epoch: int,
    skip_counters: dict[str, str],
    best: EvalResult | None,
    class_names: tuple[str, ...],
) -> None:
    """Report metrics and rank 0's checkpoint to Ray Train, then log the epoch to MLflow.

    When `best` is given (the epoch improved the best validation top-1), the
    checkpoint and the confusion matrix go to MLflow at once, so they survive
    a worker that dies later in the run.
    """
    import ray.train

    with tempfile.TemporaryDirectory(prefix="stsep-ckpt-") as directory:
        checkpoint = None
        if rank == 0:
            write_checkpoint(state, directory=directory)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
        if recorder is not None:
            recorder.log_epoch(metrics, epoch=epoch, skip_counters=skip_counters)
            if best is not None:
                recorder.log_best_checkpoint(Path(directory))
                recorder.log_evaluation(best, class_names=class_names)


def _maybe_inject_fault(*, epoch: int, rank: int) -> None:
    """Kill rank 0 once after `epoch`'s checkpoint when the fault-injection test hook is set."""
    target = os.environ.get(FAULT_EXIT_AFTER_EPOCH_ENV)
    marker = os.environ.get(FAULT_MARKER_ENV)
    if rank != 0 or target is None or marker is None or int(target) != epoch or Path(marker).exists():
        return
    import ray.train

    # Wait until the controller has registered this epoch's checkpoint, so the
    # restarted worker group resumes from it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(ray.train.get_all_reported_checkpoints()) < 1:
        time.sleep(0.5)
    Path(marker).write_text(f"killed rank 0 after epoch {epoch}\n")
    logger.warning("Fault injection: rank 0 exits after the checkpoint of epoch %d", epoch)
    os._exit(1)
