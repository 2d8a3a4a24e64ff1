"""The Ray Data clip pipeline: manifest in, decoded uint8 clips out.

::

    manifest (Parquet or DataFrame)
      -> rows of one split (unreadable ones counted and left out)
      -> random shuffle, reseeded every epoch (training only)
      -> map_batches(ClipDecoder): an actor pool, each actor with one
         decoding child process
      -> rows {"clip": uint8 [T, H, W, 3], "label": int64, "video_id": str, "view": int64}

Ray Train workers read it with ``ray.train.get_dataset_shard(name)`` and
``iter_torch_batches(batch_size=..., collate_fn=ClipCollateFn())`` (Ray's
default collation rejects the string ``video_id`` column), then call
:func:`stsep.data.transforms.to_model_input` on the device. A video that fails
to decode costs its clip: one warning names the file, the shared
:class:`~stsep.data.skips.SkipCounter` records it, and the pipeline goes on
until more than ``ClipConfig.max_unreadable_fraction`` of the split is
unreadable, when the decoder raises
:class:`~stsep.data.skips.UnreadableFractionError`.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import ray
import ray.data
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from stsep.data.clips import DEFAULT_DECODE_FUNCTION, ClipConfig, decode_views, flip_allowed
from stsep.data.decode import VideoUnreadableError
from stsep.data.manifest import read_manifest, validate_manifest
from stsep.data.safe_decode import DecodeProcess
from stsep.data.skips import SkipLog, get_skip_counter, skip_counter_name

__all__ = ["ClipCollateFn", "ClipDecoder", "build_clip_dataset", "select_split"]

logger = logging.getLogger(__name__)

# Rows handed to one decoder call: small enough that the first batches of an
# epoch arrive quickly, large enough to amortize Ray's per-batch overhead
# next to decode times of tens of milliseconds per clip.
_DECODE_BATCH_SIZE = 8

_ROW_COLUMNS = ["video_id", "path", "label", "start_frame", "end_frame", "reverse", "speed", "width", "height"]


class ClipDecoder:
    """Callable class for ``Dataset.map_batches`` that decodes clips.

    Each instance (one Ray Data actor) keeps one :class:`DecodeProcess`, so a
    hang or crash while decoding costs one clip and a child restart.

    Args:
        clip: Clip settings.
        training: One random view per row (True) or all evaluation views.
        seed: Base seed. Each actor seeds its generator with
            ``(seed, process id)``, so training clips differ between actors
            and epochs, but runs are not bit-for-bit reproducible.
        counter: Handle of the split's :class:`SkipCounter` actor; None keeps
            the record in this object only (``self.skips``).
        split: Split name, for messages.
        total: Videos in the split, for the unreadable fraction.
        decode_function: ``"module:name"`` of the frame reader run in the
            decoding child, called like :func:`stsep.data.decode.read_frames`.
    """

    def __init__(
        self,
        *,
        clip: ClipConfig,
        training: bool,
        seed: int = 0,
        counter: ray.actor.ActorHandle | None = None,
        split: str = "train",
        total: int = 0,
        decode_function: str = DEFAULT_DECODE_FUNCTION,
    ) -> None:
        torch.set_num_threads(1)
        self.clip = clip
        self.training = training
        self.rng = np.random.default_rng([seed, os.getpid()])
        self.decoder = DecodeProcess(timeout_s=clip.decode_timeout_s)
        self.counter = counter
        self.skips = SkipLog(split=split, total=total, max_unreadable_fraction=clip.max_unreadable_fraction)
        self.decode_function = decode_function

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clips, labels, video_ids, views = [], [], [], []
        num_rows = len(batch["video_id"])
        for index in range(num_rows):
            row = {name: column[index] for name, column in batch.items()}
            try:
                decoded = decode_views(
                    row,
                    clip=self.clip,
                    training=self.training,
                    rng=self.rng,
                    decoder=self.decoder,
                    decode_function=self.decode_function,
                )
            except VideoUnreadableError as error:
                self._skip(error)
                continue
            for view, frames in enumerate(decoded):
                clips.append(frames)
                labels.append(row["label"])
                video_ids.append(row["video_id"])
                views.append(view)

        if clips:
            clip_array = np.stack(clips)  # [N, T, crop, crop, 3]
        else:
            size = self.clip.crop_size
            clip_array = np.zeros((0, self.clip.num_frames, size, size, 3), dtype=np.uint8)
        return {
            "clip": clip_array,
            "label": np.asarray(labels, dtype=np.int64),
            "video_id": np.asarray(video_ids, dtype=object),
            "view": np.asarray(views, dtype=np.int64),
        }

    def _skip(self, error: VideoUnreadableError) -> None:
        new_file = self.skips.record(error.path, error.reason)
        exceeded = self.skips.exceeded()
        if self.counter is not None:
            new_file, exceeded = ray.get(self.counter.record.remote(error.path, error.reason))
        if new_file:
            logger.warning("skipping unreadable video %s: %s %s", error.path, error.reason, error.detail)
        if exceeded:
            failure = ray.get(self.counter.error.remote()) if self.counter is not None else None
            if failure is not None:
                raise failure
            self.skips.check()

    def __del__(self) -> None:
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()


class ClipCollateFn(NumpyBatchCollateFn):
    """Collate clip batches for ``iter_torch_batches(collate_fn=ClipCollateFn())``.

    The output contains ``clip`` as a uint8 tensor ``[B, T, H, W, 3]``,
    ``label`` and ``view`` as int64 tensors ``[B]``, and ``video_id`` as a
    list of B strings. Tensors stay on the CPU, and the training loop moves
    them to its device.
    """

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor | list[str]]:
        # Arrow-backed arrays are read-only, and torch wants writable memory.
        return {
            "clip": torch.from_numpy(np.array(batch["clip"], dtype=np.uint8)),
            "label": torch.from_numpy(np.array(batch["label"], dtype=np.int64)),
            "view": torch.from_numpy(np.array(batch["view"], dtype=np.int64)),
            "video_id": [str(video_id) for video_id in batch["video_id"]],
        }


def select_split(
    manifest: pd.DataFrame | str, *, split: str, limit_per_class: int | None = None
) -> pd.DataFrame:
    """Return the manifest rows of ``split``, validated.

    Args:
        manifest: Manifest table or path of a manifest file.
        split: ``train``, ``val`` or ``test``.
        limit_per_class: Keep at most this many videos per class, the first
            by ``video_id`` (for quick runs).

    Raises:
        ValueError: When the split has no rows.
    """
    table = read_manifest(manifest) if isinstance(manifest, str) else validate_manifest(manifest)
    rows = table[table["split"] == split]
    if rows.empty:
        available = sorted(table["split"].unique())
        raise ValueError(f"the manifest has no rows in split {split!r}; it has splits {available}")
    if limit_per_class is not None:
        if limit_per_class < 1:
            raise ValueError(f"limit_per_class must be >= 1 or None, got {limit_per_class}")
        rows = rows.sort_values("video_id").groupby("label", sort=True).head(limit_per_class)
    rows = rows.reset_index(drop=True)
    rows.attrs = dict(table.attrs)
    return rows


def _check_stride_spans(rows: pd.DataFrame, clip: ClipConfig) -> None:
    strided = rows[rows["speed"].notna() & rows["readable"]]
    if strided.empty:
        return
    needed = (clip.num_frames - 1) * strided["speed"].astype("int64") + 1
    short = strided[(strided["end_frame"] - strided["start_frame"]) < needed]
    if not short.empty:
        example = short.iloc[0]
        raise ValueError(
            f"{len(short)} rows are too short for {clip.num_frames} frames at their stride, e.g. "
            f"{example['video_id']} spans {example['end_frame'] - example['start_frame']} frames at "
            f"stride {example['speed']}; prepare the manifest with a longer window or lower num_frames"
        )


def build_clip_dataset(
    manifest: pd.DataFrame | str,
    *,
    split: str,
    clip: ClipConfig,
    training: bool,
    seed: int = 0,
    decode_concurrency: int = 2,
    limit_per_class: int | None = None,
    decoder_num_cpus: float = 1.0,
    skip_counter: str | None = None,
    decode_function: str = DEFAULT_DECODE_FUNCTION,
) -> ray.data.Dataset:
    """Build the Ray Data pipeline of decoded clips for one split.

    Args:
        manifest: Manifest table or path (local or ``s3://``) of a manifest file.
        split: ``train``, ``val`` or ``test``.
        clip: Clip settings.
        training: Shuffle every epoch and sample one random view per video;
            otherwise keep the manifest order and yield every evaluation
            view (``clip.num_views`` rows per video).
        seed: Base seed of the shuffle and of the decoders' generators.
        decode_concurrency: Decoder actors.
        limit_per_class: Keep at most this many videos per class.
        decoder_num_cpus: CPUs Ray reserves for each decoder actor.
        skip_counter: Actor name of the split's skip counter, by default
            ``skip_counter_name(split)``. Read it with
            :func:`~stsep.data.skips.read_skip_report`. Give concurrent runs
            distinct names.
        decode_function: ``"module:name"`` of the frame reader run in each
            decoding child; the default reads with decord.

    Returns:
        A dataset of rows ``{"clip": uint8 [T, crop, crop, 3], "label":
        int64, "video_id": str, "view": int64}``.

    Raises:
        ValueError: When the split is empty, flip is on for a dataset whose
            labels it changes, or stride rows are too short for the clip.
        UnreadableFractionError: When the manifest already marks more than
            ``clip.max_unreadable_fraction`` of the split unreadable.
    """
    if decode_concurrency < 1:
        raise ValueError(f"decode_concurrency must be >= 1, got {decode_concurrency}")
    rows = select_split(manifest, split=split, limit_per_class=limit_per_class)
    dataset_name = rows.attrs.get("dataset")
    if clip.flip_allowed and training and not flip_allowed(dataset_name):
        raise ValueError(
            f"horizontal flip changes the labels of dataset {dataset_name!r}; "
            f"use ClipConfig.for_dataset({dataset_name!r}) or flip_allowed=False"
        )
    _check_stride_spans(rows, clip)

    # Videos that probing already found unreadable count against the limit now.
    name = skip_counter or skip_counter_name(split)
    if not ray.is_initialized():
        ray.init()
    counter = get_skip_counter(name, split=split, total=len(rows), max_unreadable_fraction=clip.max_unreadable_fraction)
    unreadable = rows[~rows["readable"]]
    for path, error in zip(unreadable["path"], unreadable["error"]):
        ray.get(counter.record.remote(path, error or "unreadable", clip=False))
    if not unreadable.empty:
        logger.warning(
            "split %r: %d of %d videos were unreadable when the manifest was prepared and are left out: %s",
            split,
            len(unreadable),
            len(rows),
            ", ".join(unreadable["path"].head(10)),
        )
    failure = ray.get(counter.error.remote())
    if failure is not None:
        raise failure

    readable = rows.loc[rows["readable"], _ROW_COLUMNS].copy()
    readable["speed"] = readable["speed"].astype("float64")  # NaN marks segment-based sampling
    num_blocks = max(1, min(len(readable), decode_concurrency * 4))
    # One block per chunk, so the decoder actors work in parallel.
    bounds = np.linspace(0, len(readable), num_blocks + 1).astype(int)
    dataset = ray.data.from_pandas([readable.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
    if training:
        dataset = dataset.random_shuffle(seed=ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True), num_cpus=0)
    return dataset.map_batches(
        ClipDecoder,
        fn_constructor_kwargs=dict(
            clip=clip,
            training=training,
            seed=seed,
            counter=counter,
            split=split,
            total=len(rows),
            decode_function=decode_function,
        ),
        batch_size=_DECODE_BATCH_SIZE,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=decode_concurrency),
        num_cpus=decoder_num_cpus,
    )
