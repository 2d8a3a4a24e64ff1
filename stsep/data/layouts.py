"""Readers for the official dataset layouts, a class-per-folder layout and
user-written video lists.

Each reader returns one row per video with the columns ``video_id``,
``path``, ``label``, ``label_name`` and ``split``. Frame counts and fps are
added later by probing (:func:`stsep.data.prepare.prepare_manifest`). Roots
may be local folders or ``s3://bucket/prefix`` URIs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath

import pandas as pd

from stsep.data import _filesystem

__all__ = [
    "VIDEO_EXTENSIONS",
    "list_videos",
    "read_folder",
    "read_hmdb51",
    "read_ssv2",
    "read_ucf101",
    "read_video_list",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")

UCF101_LAYOUT = (
    "ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi and ROOT/ucfTrainTestlist/ with classInd.txt, "
    "trainlist0N.txt and testlist0N.txt"
)
HMDB51_LAYOUT = "ROOT/<class>/<video>.avi and ROOT/testTrainMulti_7030_splits/<class>_test_splitN.txt"
SSV2_LAYOUT = (
    "ROOT/20bn-something-something-v2/<id>.webm and labels.json, train.json, validation.json "
    "in ROOT/labels/ or ROOT/ (also named something-something-v2-<name>.json)"
)
FOLDER_LAYOUT = "ROOT/<class>/<video> with one folder per class"


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["video_id", "path", "label", "label_name", "split"])


def _require_dir(path: str, *, what: str, layout: str) -> None:
    if not _filesystem.is_dir(path):
        raise ValueError(f"{what} not found: {path!r}; expected layout: {layout}")


def _require_file(path: str, *, what: str, layout: str) -> str:
    if not _filesystem.exists(path):
        raise ValueError(f"{what} not found: {path!r}; expected layout: {layout}")
    return _filesystem.read_text(path)


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path.replace("\\", "/")))[0]


def _check_split_number(split: int, *, dataset: str) -> None:
    if split not in (1, 2, 3):
        raise ValueError(f"{dataset} has splits 1, 2 and 3, got split={split!r}")


# --------------------------------------------------------------------- UCF101


def read_ucf101(root: str, *, split: int) -> pd.DataFrame:
    """Read UCF101 split ``split`` (1, 2 or 3).

    Labels are the ``classInd.txt`` index minus one. The class of a video is
    the folder in its list entry, which is what ``classInd.txt`` names: file
    names may spell it differently (UCF101's ``HandstandPushups`` folder
    contains ``v_HandStandPushups_*`` files).

    Args:
        root: Folder (or S3 prefix) containing ``UCF-101/`` and ``ucfTrainTestlist/``.
        split: Official split number.

    Raises:
        ValueError: When a folder or split file is missing, or a train list
            label disagrees with ``classInd.txt``.
    """
    _check_split_number(split, dataset="UCF101")
    video_root = _filesystem.join(root, "UCF-101")
    lists = _filesystem.join(root, "ucfTrainTestlist")
    _require_dir(video_root, what="UCF101 video folder", layout=UCF101_LAYOUT)

    class_index = {}
    class_file = _filesystem.join(lists, "classInd.txt")
    for line in _require_file(class_file, what="UCF101 class index", layout=UCF101_LAYOUT).splitlines():
        if line.strip():
            number, name = line.split()
            class_index[name] = int(number) - 1

    rows = []
    for split_name, prefix in (("train", "trainlist"), ("test", "testlist")):
        list_file = _filesystem.join(lists, f"{prefix}0{split}.txt")
        text = _require_file(list_file, what="UCF101 split file", layout=UCF101_LAYOUT)
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            relative = fields[0].replace("\\", "/")
            class_name = relative.split("/")[0]
            if class_name not in class_index:
                raise ValueError(f"{list_file}:{number}: class {class_name!r} is not in {class_file}")
            label = class_index[class_name]
            if len(fields) > 1 and int(fields[1]) - 1 != label:
                raise ValueError(
                    f"{list_file}:{number}: label {fields[1]} disagrees with {class_file}, "
                    f"which gives {class_name!r} the index {label + 1}"
                )
            rows.append(
                dict(
                    video_id=_stem(relative),
                    path=_filesystem.join(video_root, *relative.split("/")),
                    label=label,
                    label_name=class_name,
                    split=split_name,
                )
            )
    return _frame(rows)


# --------------------------------------------------------------------- HMDB51

_HMDB51_TAGS = {"1": "train", "2": "test"}  # "0": not used in this split


def read_hmdb51(root: str, *, split: int) -> pd.DataFrame:
    """Read HMDB51 split ``split`` (1, 2 or 3).

    Classes are the names in the split file names, sorted alphabetically.
    Tag 1 marks a training video, 2 a test video and 0 a video the split
    leaves out.

    Args:
        root: Folder (or S3 prefix) with one folder per class and
            ``testTrainMulti_7030_splits/``.
        split: Official split number.

    Raises:
        ValueError: When the split folder or files are missing.
    """
    _check_split_number(split, dataset="HMDB51")
    split_dir = _filesystem.join(root, "testTrainMulti_7030_splits")
    _require_dir(split_dir, what="HMDB51 split folder", layout=HMDB51_LAYOUT)
    suffix = f"_test_split{split}.txt"
    split_files = {
        posixpath.basename(path)[: -len(suffix)]: path
        for path in _filesystem.list_files(split_dir, recursive=False)
        if posixpath.basename(path).endswith(suffix)
    }
    if not split_files:
        raise ValueError(f"no HMDB51 split files *{suffix} in {split_dir!r}; expected layout: {HMDB51_LAYOUT}")

    rows = []
    for label, class_name in enumerate(sorted(split_files)):
        class_dir = _filesystem.join(root, class_name)
        _require_dir(class_dir, what=f"HMDB51 class folder of {class_name!r}", layout=HMDB51_LAYOUT)
        for number, line in enumerate(_filesystem.read_text(split_files[class_name]).splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(f"{split_files[class_name]}:{number}: expected '<video>.avi <0|1|2>', got {line!r}")
            if fields[1] == "0":
                continue
            rows.append(
                dict(
                    video_id=f"{class_name}/{_stem(fields[0])}",
                    path=_filesystem.join(class_dir, fields[0]),
                    label=label,
                    label_name=class_name,
                    split=_HMDB51_TAGS[fields[1]],
                )
            )
    return _frame(rows)


# ----------------------------------------------------- Something-Something V2

SSV2_VIDEO_DIR = "20bn-something-something-v2"


def _find_ssv2_file(root: str, name: str) -> str:
    candidates = [
        _filesystem.join(root, "labels", f"{name}.json"),
        _filesystem.join(root, f"{name}.json"),
        _filesystem.join(root, "labels", f"something-something-v2-{name}.json"),
        _filesystem.join(root, f"something-something-v2-{name}.json"),
    ]
    for candidate in candidates:
        if _filesystem.exists(candidate):
            return candidate
    raise ValueError(
        f"Something-Something V2 annotation {name}.json not found; looked for {candidates}; "
        f"expected layout: {SSV2_LAYOUT}"
    )


def ssv2_class_name(template: str) -> str:
    """Return the class of a Something-Something V2 template: brackets removed."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(root: str) -> pd.DataFrame:
    """Read Something-Something V2: ``train.json`` as train, ``validation.json`` as val.

    The test set has no public labels and is left out.

    Args:
        root: Folder (or S3 prefix) containing ``20bn-something-something-v2/``
            and the annotation files.

    Raises:
        ValueError: When the video folder or an annotation file is missing,
            or an entry's template is not in ``labels.json``.
    """
    video_root = _filesystem.join(root, SSV2_VIDEO_DIR)
    _require_dir(video_root, what="Something-Something V2 video folder", layout=SSV2_LAYOUT)
    labels_file = _find_ssv2_file(root, "labels")
    labels = {name: int(index) for name, index in json.loads(_filesystem.read_text(labels_file)).items()}
    lowercase = {name.lower(): index for name, index in labels.items()}
    names = {index: name for name, index in labels.items()}

    rows = []
    for split_name, file_name in (("train", "train"), ("val", "validation")):
        annotation_file = _find_ssv2_file(root, file_name)
        for entry in json.loads(_filesystem.read_text(annotation_file)):
            class_name = ssv2_class_name(entry["template"])
            label = labels.get(class_name, lowercase.get(class_name.lower()))
            if label is None:
                raise ValueError(
                    f"{annotation_file}: video {entry['id']} has template {entry['template']!r}, "
                    f"whose class {class_name!r} is not in {labels_file}"
                )
            rows.append(
                dict(
                    video_id=str(entry["id"]),
                    path=_filesystem.join(video_root, f"{entry['id']}.webm"),
                    label=label,
                    label_name=names[label],
                    split=split_name,
                )
            )
    return _frame(rows)


# ------------------------------------------------------------- generic folder


def list_videos(root: str) -> list[str]:
    """List the video files under ``root`` (recursively), sorted.

    Raises:
        ValueError: When ``root`` does not exist.
    """
    if not _filesystem.is_dir(root):
        raise ValueError(f"video folder not found: {root!r}")
    return [path for path in _filesystem.list_files(root) if path.lower().endswith(VIDEO_EXTENSIONS)]


def _hash_fraction(text: str) -> float:
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def read_folder(root: str, *, val_fraction: float = 0.2) -> pd.DataFrame:
    """Read a ``<root>/<class>/<video>`` folder.

    Classes are the folder names, sorted. A video goes to ``val`` when the
    SHA-1 hash of its file name, read as a fraction in [0, 1), is below
    ``val_fraction``, so the split is the same on every run and machine.

    Args:
        root: Folder or S3 prefix with one folder per class.
        val_fraction: Expected fraction of each class in ``val``.

    Raises:
        ValueError: When the root is missing or contains no class folders
            with videos.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    _require_dir(root, what="video folder", layout=FOLDER_LAYOUT)
    relative_paths = []
    for path in list_videos(root):
        relative = path[len(root.rstrip("/")) + 1 :].replace("\\", "/")
        if "/" not in relative:
            logger.warning("ignoring %s: videos must sit in a class folder (%s)", path, FOLDER_LAYOUT)
            continue
        relative_paths.append((relative, path))
    classes = sorted({relative.split("/")[0] for relative, _ in relative_paths})
    if not classes:
        raise ValueError(f"no class folders with videos in {root!r}; expected layout: {FOLDER_LAYOUT}")
    label_of = {name: index for index, name in enumerate(classes)}

    rows = []
    for relative, path in relative_paths:
        class_name = relative.split("/")[0]
        file_name = posixpath.basename(relative)
        rows.append(
            dict(
                video_id=posixpath.splitext(relative)[0],
                path=path,
                label=label_of[class_name],
                label_name=class_name,
                split="val" if _hash_fraction(file_name) < val_fraction else "train",
            )
        )
    return _frame(rows)


# -------------------------------------------------------- user-written list


def read_video_list(path: str) -> pd.DataFrame:
    """Read a user-written list of videos (CSV or Parquet).

    Needs the columns ``path``, ``split`` and ``label`` or ``label_name``
    (or both). ``video_id`` defaults to the file name without extension. A
    missing ``label`` becomes the index of ``label_name`` in sorted order,
    and a missing ``label_name`` becomes the label as text. Relative paths are taken
    relative to the list's folder. Other manifest columns (``num_frames``,
    ``start_frame`` ...) are kept.

    Raises:
        ValueError: When the file is missing or lacks a needed column.
    """
    if not _filesystem.exists(path):
        raise ValueError(f"video list not found: {path!r}")
    if path.lower().endswith(".parquet"):
        filesystem, resolved = _filesystem.resolve(path)
        with filesystem.open_input_file(resolved) as stream:
            table = pd.read_parquet(stream)
    else:
        with _filesystem.open_input(path) as stream:
            table = pd.read_csv(stream)
    missing = [name for name in ("path", "split") if name not in table.columns]
    if "label" not in table.columns and "label_name" not in table.columns:
        missing.append("label or label_name")
    if missing:
        raise ValueError(
            f"video list {path!r} lacks column(s) {missing}; it needs path, split and label "
            "or label_name, and may add video_id and any other manifest column"
        )
    table = table.copy()
    base = posixpath.dirname(path) if _filesystem.is_remote(path) else None

    def absolute(video_path: str) -> str:
        if _filesystem.is_remote(video_path) or video_path.startswith("/"):
            return video_path
        if base is not None:
            return _filesystem.join(base, video_path)
        _, resolved_list = _filesystem.resolve(path)
        return _filesystem.join(posixpath.dirname(resolved_list), video_path)

    table["path"] = [absolute(str(value)) for value in table["path"]]
    if "label" not in table.columns:
        classes = sorted(table["label_name"].astype(str).unique())
        table["label"] = table["label_name"].astype(str).map({name: index for index, name in enumerate(classes)})
    if "label_name" not in table.columns:
        table["label_name"] = table["label"].astype(str)
    if "video_id" not in table.columns:
        table["video_id"] = [_stem(value) for value in table["path"]]
    return table
