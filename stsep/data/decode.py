"""Frame decoding with decord: open a video, probe it, read chosen frames.

Videos are opened from a local path or, for ``s3://`` URIs, from the bytes
read through pyarrow's filesystem (``io.BytesIO``). Only the requested frame
indices are decoded (``VideoReader.get_batch``), never the whole video.
Frames come back as uint8 ``[N, H, W, 3]`` RGB.

Everything here runs in the calling process. Decoding damaged files can hang
or abort the process, so the clip pipeline calls these functions through
:mod:`stsep.data.safe_decode`, which runs them in a child process.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stsep.data import _filesystem

__all__ = [
    "VideoInfo",
    "VideoUnreadableError",
    "open_video_reader",
    "probe_video",
    "read_frames",
    "resized_shape",
]

logger = logging.getLogger(__name__)


class VideoUnreadableError(Exception):
    """A video could not be opened or decoded.

    Attributes:
        path: The video's path or URI.
        reason: Short category (``missing``, ``empty``, ``undecodable``,
            ``index_out_of_range``, ``timeout``, ``crash``).
        detail: The underlying error message.
    """

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        self.path = path
        self.reason = reason
        self.detail = detail
        message = f"{reason}: {path}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class VideoInfo:
    """Probe result of one video.

    Attributes:
        num_frames: Frames the decoder can return, counted up to the last
            frame that actually decodes.
        declared_frames: Frame count the container declares.
        fps: Average frames per second.
        width: Frame width in pixels.
        height: Frame height in pixels.
    """

    num_frames: int
    declared_frames: int
    fps: float
    width: int
    height: int


def _decord():
    # decord is imported on first use: its bundled FFmpeg libraries clash
    # with PyAV's when decord loads first (PyAV then fails to open the VP9
    # encoder), and most importers of this package never decode.
    import decord

    # Silences FFmpeg's own messages. decord still prints one line of its own
    # ("ERROR opening: ...") for each file it fails to open.
    decord.logging.set_level(decord.logging.QUIET)
    return decord


def _check_file(path: str) -> None:
    size = _filesystem.file_size(path)
    if size is None:
        raise VideoUnreadableError(path, "missing", "no such file")
    if size == 0:
        raise VideoUnreadableError(path, "empty", "file has zero bytes")


def _load(path: str) -> str | bytes:
    """Return what decord opens: the local path, or the bytes of an ``s3://`` object."""
    _check_file(path)
    return _filesystem.read_bytes(path) if _filesystem.is_remote(path) else path


def _open(source: str | bytes, *, path: str, width: int = -1, height: int = -1, num_threads: int = 1):
    decord = _decord()
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return decord.VideoReader(stream, width=width, height=height, num_threads=num_threads)
    except (RuntimeError, AssertionError, decord.DECORDError) as error:
        # decord raises RuntimeError when FFmpeg cannot open the file and
        # AssertionError when the container declares zero frames.
        raise VideoUnreadableError(path, "undecodable", str(error).splitlines()[0][:200]) from error


def open_video_reader(path: str, *, width: int = -1, height: int = -1, num_threads: int = 1):
    """Open a decord ``VideoReader`` on a local path or ``s3://`` URI.

    Args:
        path: Local path or ``s3://`` URI.
        width: Output width in pixels, -1 to keep the stored width.
        height: Output height in pixels, -1 to keep the stored height.
        num_threads: Decoder threads; 0 lets FFmpeg choose (all cores).

    Returns:
        A ``decord.VideoReader``.

    Raises:
        VideoUnreadableError: When the file is missing, empty or cannot be
            opened.
    """
    return _open(_load(path), path=path, width=width, height=height, num_threads=num_threads)


# Part of decord's error message when its resize produced a frame of another size.
_RESIZE_REJECTED = "DECORDArrayCopyFromTo"

# Fresh readers tried before a frame or clip counts as undecodable. decord
# decodes on a thread that reads ahead, so in a file with a damaged packet
# any request can fail now and then. With the test fixture's cut-off AVI, a
# few percent of fresh readers failed such frames, while the damaged frame
# itself failed every time.
_DECODE_ATTEMPTS = 3


def _read_frame(source: str | bytes, index: int, *, path: str) -> np.ndarray | None:
    """Return frame ``index`` as uint8 ``[H, W, 3]``, or None when no fresh reader decodes it."""
    decord = _decord()
    for _ in range(_DECODE_ATTEMPTS):
        try:
            return _open(source, path=path).get_batch([index]).asnumpy()[0]
        except (VideoUnreadableError, RuntimeError, IndexError, decord.DECORDError):
            continue
    return None


def probe_video(path: str) -> VideoInfo:
    """Count the frames a video really contains and read its fps and size.

    Containers can declare more frames than they contain. An AVI cut off in
    the middle of a frame still lists that frame, for example. The last
    declared frame is decoded, and when it fails, a binary search finds the last
    frame that decodes (assuming frames decode up to a point and fail after
    it, as in a cut-off file).

    Args:
        path: Local path or ``s3://`` URI.

    Returns:
        The probed :class:`VideoInfo`.

    Raises:
        VideoUnreadableError: When the file cannot be opened or not even its
            first frame decodes.
    """
    source = _load(path)
    reader = _open(source, path=path)
    declared = len(reader)
    fps = float(reader.get_avg_fps())
    del reader
    first = _read_frame(source, 0, path=path)
    if first is None:
        raise VideoUnreadableError(path, "undecodable", "the first frame does not decode")
    height, width = int(first.shape[0]), int(first.shape[1])

    num_frames = declared
    if _read_frame(source, declared - 1, path=path) is None:
        low, high = 0, declared - 1  # frame `low` decodes, frame `high` does not
        while high - low > 1:
            middle = (low + high) // 2
            if _read_frame(source, middle, path=path) is not None:
                low = middle
            else:
                high = middle
        num_frames = low + 1
        logger.info("%s declares %d frames but only %d decode", path, declared, num_frames)
    if not math.isfinite(fps) or fps <= 0:
        fps = 0.0
    return VideoInfo(num_frames=num_frames, declared_frames=declared, fps=fps, width=width, height=height)


def resized_shape(*, height: int, width: int, short_side: int) -> tuple[int, int]:
    """Return ``(height, width)`` scaled so the shorter side is ``short_side``."""
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def read_frames(
    path: str,
    indices: Sequence[int],
    *,
    short_side: int | None = None,
    width: int = 0,
    height: int = 0,
    num_threads: int = 1,
) -> np.ndarray:
    """Decode the frames at ``indices``, in the order given.

    Indices are decoded once each, in increasing order, and then arranged in
    the requested order, so repeated and unsorted indices cost no extra seeks.

    Args:
        path: Local path or ``s3://`` URI.
        indices: Frame indices, any order, repeats allowed.
        short_side: Resize so the shorter side has this many pixels, or None
            to keep the stored size. decord resizes during decoding when the
            stored ``width`` and ``height`` are given. Otherwise, and when
            decord rejects the size, the frames come back at the stored size
            and the caller resizes them.
        width: Stored frame width in pixels, 0 when unknown.
        height: Stored frame height in pixels, 0 when unknown.
        num_threads: Decoder threads.

    Returns:
        uint8 ``[len(indices), H, W, 3]`` RGB frames.

    Raises:
        VideoUnreadableError: When the file cannot be opened, an index is
            past the last frame, or a frame fails to decode.
    """
    requested = np.asarray(indices, dtype=np.int64)
    if requested.size == 0:
        raise ValueError("read_frames needs at least one frame index")
    out_width, out_height = -1, -1
    if short_side is not None and width > 0 and height > 0:
        out_height, out_width = resized_shape(height=height, width=width, short_side=short_side)
    source = _load(path)
    unique, inverse = np.unique(requested, return_inverse=True)

    decord = _decord()
    attempt = 0
    while True:
        # A fresh reader recovers frames that the last one lost to read-ahead
        # into a damaged packet (see ``_DECODE_ATTEMPTS``).
        reader = _open(source, path=path, width=out_width, height=out_height, num_threads=num_threads)
        if unique[0] < 0 or unique[-1] >= len(reader):
            bad = int(unique[0] if unique[0] < 0 else unique[-1])
            raise VideoUnreadableError(
                path, "index_out_of_range", f"frame {bad} requested, the video has frames 0..{len(reader) - 1}"
            )
        try:
            frames = reader.get_batch(unique.tolist()).asnumpy()
            break
        except (RuntimeError, IndexError, decord.DECORDError) as error:
            if out_width > 0 and _RESIZE_REJECTED in str(error):
                # decord 0.6.0 fails to resize to some sizes (48 x 48 from
                # 96 x 96, for one). Decode at the stored size instead, and
                # the caller resizes.
                out_width = out_height = -1
                continue
            attempt += 1
            if attempt == _DECODE_ATTEMPTS:
                detail = f"frames up to {int(unique[-1])} do not decode: {str(error).splitlines()[0][:160]}"
                raise VideoUnreadableError(path, "undecodable", detail) from error
    return frames[inverse.reshape(-1)]
