"""Benchmark a training step per variant and the input pipeline on a CUDA GPU.

Two parts, sized to finish in under five minutes on one GPU:

1. Training step: one SGD step per variant (``vanilla``, ``ns4``, ``rns2``,
   ``stsep-s1234-state``, ``stsep-s1234-nostate`` and SpikingJelly's
   SEW-ResNet-18, built by :mod:`benchmarks.model`) at depth 18, T=8,
   112x112, batch 16, in three precisions: ``fp32``, ``fp16`` (autocast with
   a ``GradScaler``) and ``bf16`` (autocast, no scaler: bfloat16 has
   float32's exponent range). The step follows ``stsep.training.loop``:
   uint8 clips ``[B, T, H, W, 3]`` go through ``to_model_input`` on the GPU,
   the loss is taken on float32 logits, and the model is channels-last
   (``train.channels_last``, on by default). The steps run interleaved, one
   repeat of each per round, and the table gives the median. ``vs_spikingjelly``
   compares with SpikingJelly in the same precision and ``vs_fp32`` with the
   same variant in float32. Peak memory is ``torch.cuda.max_memory_allocated``
   while the configuration builds and runs two steps, less what was allocated
   before it.
2. Input: the Ray Data pipeline (:func:`stsep.data.build_clip_dataset`) feeding
   a GPU consumer that copies each uint8 batch to the GPU and normalizes it
   with ``to_model_input``. It compares two host buffers: pageable, as the
   training loop's ``collate_clips`` returns, and pinned (``pin_memory()`` in
   the collate function), which lets ``non_blocking=True`` overlap the copy.
   ``vs_training_step`` is the pipeline's clips/s over the ``vanilla`` fp16
   step's, so a value above 1 means the decoders keep that model fed.

On a machine without a CUDA GPU the script prints one line saying so and
exits with status 0. ``--device cpu`` runs the same code on the CPU, with
small settings, to check it without a GPU.

NOTE: the CUDA path has not run yet. It was checked with ``--device cpu``
only, so the five-minute budget is an estimate.

Usage: ``python benchmarks/gpu.py [--batch 16] [--frames 8] [--size 112] [--clips 256]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import format_rows, time_interleaved

__all__ = ["NO_GPU_MESSAGE", "PRECISIONS", "main", "run_input", "run_steps"]

logger = logging.getLogger("stsep.benchmarks.gpu")

NO_GPU_MESSAGE = "benchmarks/gpu.py: no CUDA GPU found (torch.cuda.is_available() is False); nothing to measure"

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
DEFAULT_VARIANTS: tuple[str, ...] = (
    "vanilla",
    "ns4",
    "rns2",
    "stsep-s1234-state",
    "stsep-s1234-nostate",
    "spikingjelly",
)


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_amp_step(
    variant: str,
    *,
    precision: str,
    channels_last: bool,
    device: Any,
    num_frames: int,
    batch: int,
    size: int,
) -> tuple[Callable[[], None], int]:
    """Return (one training step that waits for the device, number of parameters).

    Mirrors ``stsep.training.loop._train_one_epoch``: autocast around the
    forward pass and the loss, the loss on float32 logits, and a GradScaler
    for float16.
    """
    import torch

    from benchmarks.model import NUM_CLASSES, _build
    from stsep.data.transforms import to_model_input

    torch.manual_seed(0)
    model, logits_of = _build(variant, num_frames=num_frames)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    criterion = torch.nn.CrossEntropyLoss()
    clips_uint8 = torch.randint(0, 256, (batch, num_frames, size, size, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def autocast() -> Any:
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def step() -> None:
        with autocast():
            logits = logits_of(to_model_input(clips_uint8))  # [B, num_classes]
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        _synchronize(device)

    return step, sum(parameter.numel() for parameter in model.parameters())


def run_steps(
    *,
    device: Any,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    precisions: Sequence[str] = PRECISIONS,
    channels_last: bool = True,
    num_frames: int = 8,
    batch: int = 16,
    size: int = 112,
    repeats: int = 3,
    iterations: int = 5,
) -> list[dict[str, Any]]:
    """Time one training step per (variant, precision), interleaved; return one row each.

    Rows carry ``median_ms``, ``min_ms``, ``clips_per_s``, ``peak_mib``,
    ``vs_spikingjelly`` (SpikingJelly's median over this one's in the same
    precision, > 1 is faster) and ``vs_fp32`` (the same variant's fp32 median
    over this one's).
    """
    import torch

    cases = {}
    peaks = {}
    for variant in variants:
        for precision in precisions:
            name = f"{variant} {precision}"
            logger.info("building %s", name)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                allocated_before = torch.cuda.memory_allocated(device)
            step, _ = _make_amp_step(
                variant, precision=precision, channels_last=channels_last, device=device,
                num_frames=num_frames, batch=batch, size=size,
            )
            step()  # the first step allocates gradients and momentum buffers
            step()
            if device.type == "cuda":
                peaks[name] = (torch.cuda.max_memory_allocated(device) - allocated_before) / 2**20
            cases[name] = step

    logger.info("timing %d configurations, %d repeats of %d steps", len(cases), repeats, iterations)
    timings = time_interleaved(cases, repeats=repeats, iterations=iterations, warmup=1)

    rows = []
    for variant in variants:
        for precision in precisions:
            name = f"{variant} {precision}"
            timing = timings[name]
            row = {
                "variant": variant,
                "precision": precision,
                "channels_last": channels_last,
                "batch": batch,
                "num_frames": num_frames,
                "size": size,
                "median_ms": timing["median_ms"],
                "min_ms": timing["min_ms"],
                "clips_per_s": batch / timing["median_ms"] * 1e3,
                "peak_mib": peaks.get(name, float("nan")),
            }
            reference = timings.get(f"spikingjelly {precision}")
            if reference is not None:
                row["vs_spikingjelly"] = reference["median_ms"] / timing["median_ms"]
            fp32 = timings.get(f"{variant} fp32")
            if fp32 is not None:
                row["vs_fp32"] = fp32["median_ms"] / timing["median_ms"]
            rows.append(row)
    return rows


def _collate_pinned(batch: dict) -> dict:
    """Collate like ``stsep.training.loop.collate_clips``, then pin the clip and label buffers."""
    from stsep.training.loop import collate_clips

    tensors = collate_clips(batch)
    tensors["clip"] = tensors["clip"].pin_memory()
    tensors["label"] = tensors["label"].pin_memory()
    return tensors


def _drain_to_device(manifest, clip, *, device: Any, batch: int, pinned: bool, decoders: int) -> tuple[float, int]:
    """Decode ``manifest`` with Ray Data into the device; return (seconds, clips)."""
    from stsep.data import build_clip_dataset
    from stsep.data.transforms import to_model_input
    from stsep.training.loop import collate_clips

    dataset = build_clip_dataset(
        manifest, split="val", clip=clip, training=False, decode_concurrency=decoders,
        skip_counter="gpu-benchmark-skips",
    )
    batches = dataset.iter_torch_batches(
        batch_size=batch, collate_fn=_collate_pinned if pinned else collate_clips, prefetch_batches=2
    )
    clips = 0
    started = time.perf_counter()
    for tensors in batches:
        frames = to_model_input(tensors["clip"].to(device, non_blocking=True))  # [B, T, 3, H, W]
        tensors["label"].to(device, non_blocking=True)
        clips += frames.shape[0]
    _synchronize(device)
    return time.perf_counter() - started, clips


def run_input(
    *,
    device: Any,
    num_clips: int = 256,
    num_frames: int = 8,
    batch: int = 16,
    decoders: int | None = None,
) -> list[dict[str, Any]]:
    """Measure Ray Data clips/s into a GPU consumer with pageable and with pinned host buffers.

    Starts a local Ray instance with all CPUs when Ray is not running. Start-up
    (the decoder actor pool) is removed as in :mod:`benchmarks.data_pipeline`:
    each run is repeated on one batch of clips, and ``clips_per_s`` divides
    the difference in clips by the difference in seconds.

    Raises:
        RuntimeError: when there is no sample footage (see
            :func:`benchmarks.data_pipeline.sample_manifest`).
    """
    import ray

    from benchmarks.data_pipeline import sample_manifest
    from stsep.data import ClipConfig

    cpus = os.cpu_count() or 2
    decoders = decoders or max(1, cpus - 2)
    manifest = sample_manifest(num_clips)
    clip = ClipConfig(num_frames=num_frames, short_side=128, crop_size=112, flip_allowed=False)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    rows = []
    try:
        for pinned in (False, True) if device.type == "cuda" else (False,):
            options = dict(device=device, batch=batch, pinned=pinned, decoders=decoders)
            seconds, clips = _drain_to_device(manifest, clip, **options)
            startup_s, startup_clips = _drain_to_device(manifest.head(batch), clip, **options)
            rows.append(
                {
                    "host_buffer": "pinned" if pinned else "pageable",
                    "decoders": decoders,
                    "num_frames": num_frames,
                    "clips": clips,
                    "seconds": seconds,
                    "startup_s": startup_s,
                    "clips_per_s": (clips - startup_clips) / max(seconds - startup_s, 1e-9),
                }
            )
    finally:
        if started:
            ray.shutdown()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark training steps and the input pipeline on a GPU.")
    parser.add_argument("--device", default="cuda", help="torch device; 'cpu' checks the code path (default: cuda)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated variants")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: fp32, fp16, bf16")
    parser.add_argument("--batch", type=int, default=16, help="clips per training step and per input batch")
    parser.add_argument("--frames", type=int, default=8, help="time steps T per clip")
    parser.add_argument("--size", type=int, default=112, help="frame height and width in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported")
    parser.add_argument("--iterations", type=int, default=5, help="steps per configuration and round")
    parser.add_argument("--clips", type=int, default=256, help="clips decoded per input run")
    parser.add_argument("--no-channels-last", action="store_true", help="keep the model in NCHW memory format")
    parser.add_argument("--skip-input", action="store_true", help="skip the Ray Data input benchmark")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)

    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(NO_GPU_MESSAGE)
        return 0
    precisions = [name.strip() for name in args.precisions.split(",") if name.strip()]
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"invalid --precisions {args.precisions!r}: expected a subset of {','.join(PRECISIONS)}")
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]

    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, cuDNN benchmark mode {torch.backends.cudnn.benchmark}")
    step_rows = run_steps(
        device=device, variants=variants, precisions=precisions, channels_last=not args.no_channels_last,
        num_frames=args.frames, batch=args.batch, size=args.size, repeats=args.repeats,
        iterations=args.iterations,
    )
    print(
        format_rows(
            step_rows,
            ["variant", "precision", "channels_last", "batch", "num_frames", "size", "median_ms", "min_ms",
             "clips_per_s", "vs_spikingjelly", "vs_fp32", "peak_mib"],
        )
    )
    print(f"\ntraining steps: {time.perf_counter() - started:.0f} s")

    if args.skip_input:
        return 0
    reference = next(
        (row for row in step_rows if row["variant"] == "vanilla" and row["precision"] == "fp16"), None
    ) or (step_rows[0] if step_rows else None)
    try:
        input_rows = run_input(device=device, num_clips=args.clips, num_frames=args.frames, batch=args.batch)
    except RuntimeError as error:
        print(f"input benchmark skipped: {error}")
        return 0
    for row in input_rows:
        if reference is not None:
            row["vs_training_step"] = row["clips_per_s"] / reference["clips_per_s"]
            row["training_step"] = f"{reference['variant']} {reference['precision']}"
    print()
    print(
        format_rows(
            input_rows,
            ["host_buffer", "decoders", "clips", "seconds", "startup_s", "clips_per_s", "vs_training_step",
             "training_step"],
        )
    )
    print(f"\ntotal: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
