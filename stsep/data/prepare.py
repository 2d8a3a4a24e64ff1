"""Turn a dataset root into a manifest: read the layout, probe, write.

:func:`prepare_manifest` is the core of ``pipelines/prepare.py`` and what the
main job calls. Probing opens every video once, in parallel with Ray Data,
each actor decoding in a child process with a time limit, and records the
frames the decoder can actually return (see
:func:`stsep.data.decode.probe_video`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import ray
import ray.data

from stsep.data import layouts, probes
from stsep.data.decode import VideoUnreadableError
from stsep.data.manifest import validate_manifest, write_manifest
from stsep.data.safe_decode import DecodeProcess

__all__ = ["DATASETS", "VideoProber", "check_arguments", "prepare_manifest", "probe_videos", "summarize_manifest"]

logger = logging.getLogger(__name__)

DATASETS = ("ucf101", "hmdb51", "ssv2", "folder", "manifest", "arrow", "speed", "demo")
_SPLIT_DATASETS = ("ucf101", "hmdb51")
_PROBE_COLUMNS = ["num_frames", "fps", "width", "height", "readable", "error"]


class VideoProber:
    """Callable class for ``Dataset.map_batches`` that probes videos.

    Args:
        timeout_s: Seconds one video may take to probe.
    """

    def __init__(self, *, timeout_s: float) -> None:
        self.decoder = DecodeProcess(timeout_s=timeout_s)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        results = []
        for path in batch["path"]:
            try:
                info = self.decoder.call("stsep.data.decode:probe_video", path=path)
            except VideoUnreadableError as error:
                logger.warning("unreadable video %s: %s %s", path, error.reason, error.detail)
                results.append(dict(num_frames=0, fps=0.0, width=0, height=0, readable=False, error=str(error)))
                continue
            results.append(
                dict(
                    num_frames=info.num_frames,
                    fps=info.fps,
                    width=info.width,
                    height=info.height,
                    readable=True,
                    error="",
                )
            )
        out = pd.DataFrame(results, columns=_PROBE_COLUMNS)
        out.insert(0, "row", batch["row"].to_numpy())
        return out

    def __del__(self) -> None:
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()


def probe_videos(videos: pd.DataFrame, *, concurrency: int = 2, timeout_s: float = 120.0) -> pd.DataFrame:
    """Probe every video once, in parallel with Ray Data.

    Starts a local Ray instance (or joins the one in ``RAY_ADDRESS``) when
    Ray is not initialized yet.

    Args:
        videos: Table with a ``path`` column.
        concurrency: Probing actors, each using one CPU.
        timeout_s: Seconds one video may take to probe before it counts as
            unreadable.

    Returns:
        ``videos`` with the columns ``num_frames``, ``fps``, ``width``,
        ``height``, ``readable`` and ``error`` set, in the same row order.
    """
    if videos.empty:
        return videos.assign(**{name: pd.Series(dtype="object") for name in _PROBE_COLUMNS})
    if not ray.is_initialized():
        ray.init()
    paths = pd.DataFrame({"row": np.arange(len(videos)), "path": videos["path"].astype(str).to_numpy()})
    num_blocks = max(1, min(len(paths), concurrency * 4))
    bounds = np.linspace(0, len(paths), num_blocks + 1).astype(int)
    dataset = ray.data.from_pandas([paths.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
    probed = dataset.map_batches(
        VideoProber,
        fn_constructor_kwargs=dict(timeout_s=timeout_s),
        batch_size=1,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=1,
    ).to_pandas()
    probed = probed.sort_values("row").set_index("row")
    out = videos.drop(columns=[name for name in _PROBE_COLUMNS if name in videos.columns]).reset_index(drop=True)
    for name in _PROBE_COLUMNS:
        out[name] = probed[name].to_numpy()
    out["num_frames"] = out["num_frames"].astype("int64")
    out["readable"] = out["readable"].astype(bool)
    return out


def check_arguments(dataset: str, *, root: str | None, split: int) -> None:
    """Raise ValueError when the dataset name, root or split number is invalid."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if root is None and dataset != "demo":
        raise ValueError(f"dataset {dataset!r} needs a root folder or s3:// prefix")
    if dataset in _SPLIT_DATASETS and split not in (1, 2, 3):
        raise ValueError(f"{dataset} has splits 1, 2 and 3, got split={split}")
    if dataset not in _SPLIT_DATASETS and split != 1:
        raise ValueError(f"split={split} applies only to {' and '.join(_SPLIT_DATASETS)}; leave it at 1 for {dataset}")


def prepare_manifest(
    dataset: str,
    *,
    root: str | None,
    split: int = 1,
    output: str | None = None,
    window: int | None = None,
    test_fraction: float = 0.25,
    val_fraction: float = 0.2,
    probe_concurrency: int = 2,
    probe_timeout_s: float = 120.0,
) -> pd.DataFrame:
    """Read a dataset layout, probe every video and write the manifest.

    Args:
        dataset: One of ``DATASETS``: an official layout (``ucf101``,
            ``hmdb51``, ``ssv2``), a class-per-folder layout (``folder``), a
            user-written list of videos (``manifest``, ``root`` is the CSV or
            Parquet file) or a temporal probe (``arrow``, ``speed``, ``demo``).
        root: Local folder or ``s3://`` prefix of the dataset; optional for
            ``demo``, where it adds videos to the sample clips.
        split: Official split of UCF101 and HMDB51 (1, 2 or 3); 1 otherwise.
        output: Local path or ``s3://`` URI of the Parquet manifest; None
            writes nothing.
        window: Frames per probe window (``arrow``, ``speed``, ``demo``);
            None uses 16, or 32 for ``speed``, which needs room for stride 4.
        test_fraction: Share of each source video used for probe test windows.
        val_fraction: Share of each class in ``val`` for ``folder``.
        probe_concurrency: Probing actors.
        probe_timeout_s: Seconds one video may take to probe.

    Returns:
        The manifest, with ``attrs["dataset"]`` set.

    Raises:
        ValueError: On an unknown dataset, a missing root or split file, or
            an invalid argument; the message names the value and the fix.
    """
    check_arguments(dataset, root=root, split=split)

    if dataset in ("arrow", "speed", "demo"):
        settings = probes.ProbeSettings(
            window=window or (32 if dataset == "speed" else 16), test_fraction=test_fraction
        )
        paths = probes.demo_source_videos(root) if dataset == "demo" else layouts.list_videos(root)
        if not paths:
            raise ValueError(f"no videos ({', '.join(layouts.VIDEO_EXTENSIONS)}) found under {root!r}")
        sources = probe_videos(
            probes.source_table(paths, root=root), concurrency=probe_concurrency, timeout_s=probe_timeout_s
        )
        build_rows = probes.speed_rows if dataset == "speed" else probes.arrow_rows
        manifest = build_rows(sources, settings=settings)
        if manifest.empty:
            raise ValueError(
                f"no source video under {root!r} is long enough for one window of {settings.window} frames; "
                "lower the window"
            )
    else:
        if dataset == "ucf101":
            videos = layouts.read_ucf101(root, split=split)
        elif dataset == "hmdb51":
            videos = layouts.read_hmdb51(root, split=split)
        elif dataset == "ssv2":
            videos = layouts.read_ssv2(root)
        elif dataset == "folder":
            videos = layouts.read_folder(root, val_fraction=val_fraction)
        else:
            videos = layouts.read_video_list(root)
        if videos.empty:
            raise ValueError(f"the {dataset} layout under {root!r} lists no videos")
        if dataset == "manifest" and {"num_frames", "fps"} <= set(videos.columns):
            manifest = videos  # frame counts written by the user are trusted
        else:
            manifest = probe_videos(videos, concurrency=probe_concurrency, timeout_s=probe_timeout_s)

    manifest = validate_manifest(manifest, source=f"{dataset} manifest")
    manifest.attrs["dataset"] = dataset
    if output is not None:
        write_manifest(manifest, output, dataset=dataset)
    return manifest


def summarize_manifest(manifest: pd.DataFrame) -> str:
    """Return a short text summary: rows per split, classes and unreadable files."""
    lines = [f"dataset: {manifest.attrs.get('dataset', 'unknown')}"]
    counts = manifest.groupby("split").size()
    lines.append("rows per split: " + ", ".join(f"{split} {count}" for split, count in counts.items()))
    lines.append(f"classes: {manifest['label'].nunique()}")
    unreadable = manifest.loc[~manifest["readable"], ["path", "error"]].drop_duplicates("path")
    lines.append(f"unreadable files: {len(unreadable)}")
    for path, error in zip(unreadable["path"], unreadable["error"]):
        lines.append(f"  {path}: {error}")
    return "\n".join(lines)
