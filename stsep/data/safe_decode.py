"""Decoding in a child process with a time limit per call.

Native decoders can hang on a damaged file or abort their whole process,
which no ``try``/``except`` catches. :class:`DecodeProcess` keeps one
persistent child process, sends it one decode call at a time and waits at
most ``timeout_s`` seconds for the reply. A call that times out or kills the
child raises :class:`~stsep.data.decode.VideoUnreadableError` (reason
``timeout`` or ``crash``). The child is then restarted for the next call, so
one bad file costs one clip.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import subprocess
import sys
import time
from typing import Any

from stsep.data.decode import VideoUnreadableError

__all__ = ["DecodeProcess"]

logger = logging.getLogger(__name__)

_HEADER_SIZE = 8
_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_decode_worker.py")


class _ChildGone(Exception):
    pass


class DecodeProcess:
    """A persistent child process that runs decode functions with a time limit.

    Args:
        timeout_s: Seconds one call may take before the child is killed.

    Example::

        with DecodeProcess(timeout_s=30) as process:
            frames = process.call("stsep.data.decode:read_frames", path=path, indices=[0, 4])
    """

    def __init__(self, *, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.restarts = 0
        self._process: subprocess.Popen | None = None
        self._request_fd = -1
        self._response_fd = -1

    def __enter__(self) -> DecodeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _start(self) -> None:
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        environment = dict(os.environ)
        # The child must import the same modules as this process, including
        # decode functions defined outside installed packages.
        search_path = [entry for entry in sys.path if entry]
        environment["PYTHONPATH"] = os.pathsep.join(search_path)
        self._process = subprocess.Popen(
            [sys.executable, _WORKER_SCRIPT, str(request_read), str(response_write)],
            pass_fds=(request_read, response_write),
            stdin=subprocess.DEVNULL,
            env=environment,
            close_fds=True,
        )
        os.close(request_read)
        os.close(response_write)
        self._request_fd = request_write
        self._response_fd = response_read

    def close(self) -> None:
        """Stop the child process, if it runs."""
        process = getattr(self, "_process", None)
        if process is None:
            return
        for fd in (self._request_fd, self._response_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._request_fd = self._response_fd = -1
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None

    def call(self, function: str, /, **kwargs: Any) -> Any:
        """Run ``function(**kwargs)`` in the child and return its result.

        Args:
            function: ``"module:name"`` of a function the child can import.
            **kwargs: Picklable keyword arguments; ``path`` names the video in
                errors.

        Returns:
            The function's return value.

        Raises:
            VideoUnreadableError: When the call raises, times out (reason
                ``timeout``) or the child dies (reason ``crash``).
        """
        path = str(kwargs.get("path", "<unknown>"))
        if self._process is None:
            self._start()
        payload = pickle.dumps((function, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        deadline = time.monotonic() + self.timeout_s
        try:
            os.write(self._request_fd, len(payload).to_bytes(_HEADER_SIZE, "little") + payload)
            size = int.from_bytes(self._read(_HEADER_SIZE, deadline=deadline), "little")
            status, value = pickle.loads(self._read(size, deadline=deadline))
        except TimeoutError:
            self._restart()
            raise VideoUnreadableError(path, "timeout", f"decoding took longer than {self.timeout_s:g} s") from None
        except (_ChildGone, BrokenPipeError):
            code = self._exit_code()
            self._restart()
            raise VideoUnreadableError(path, "crash", f"the decoder process died (exit code {code})") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as error:
            raise VideoUnreadableError(path, "undecodable", f"unreadable reply: {error!r}") from None

        if status == "ok":
            return value
        if isinstance(value, VideoUnreadableError):
            raise value
        raise VideoUnreadableError(path, "undecodable", f"{type(value).__name__}: {value}")

    def _exit_code(self) -> int | None:
        # The pipe closes a moment before the process can be reaped.
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def _restart(self) -> None:
        self.restarts += 1
        self.close()

    def _read(self, size: int, *, deadline: float) -> bytes:
        chunks = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._response_fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(self._response_fd, min(size, 1 << 20))
            if not chunk:
                raise _ChildGone
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)
