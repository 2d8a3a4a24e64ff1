"""The compiled fused LIF kernel (``csrc/fused_lif.cpp``), built on first use.

The eager kernels in `stsep.neurons.kernels` run several PyTorch operations
per time step, each a pass over memory. The compiled kernel runs the whole
charge, fire and reset recurrence per block of neurons in one pass, and the
backward recurrence in another, so it moves about the bytes of the memory
floor. It is compiled once per machine and torch version with
`torch.utils.cpp_extension` (about 25 s on two cores) and cached under
``~/.cache/torch_extensions`` (or ``TORCH_EXTENSIONS_DIR``).

Where no compiler is found, or ``STSEP_FUSED_LIF=0`` is set, `load` returns
None once, with one warning, and the eager kernels run instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["DISABLE_VARIABLE", "compile_seconds", "load"]

logger = logging.getLogger(__name__)

DISABLE_VARIABLE = "STSEP_FUSED_LIF"
SOURCE = Path(__file__).resolve().parent / "csrc" / "fused_lif.cpp"
# No fused multiply-add may change a rounding, or spikes could differ from
# SpikingJelly's. Without -fno-trapping-math GCC 12 will not vectorize the
# compare-and-select loops (it changes no result, only what may trap), and
# -fopenmp makes ATen's parallel_for in the header use threads.
CFLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp"]
# NOTE: measured with GCC 12 on x86-64 only. Another compiler may leave the
# loops scalar, which costs speed but not correctness.

# torch waits on the lock file of a build in progress with no time limit.
STALE_LOCK_S = 600.0

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "module": None, "seconds": None}


def load() -> Any | None:
    """Return the compiled module, building it on the first call; None where it cannot be built."""
    if _state["tried"]:
        return _state["module"]
    with _lock:
        if not _state["tried"]:
            _state["module"] = _build()
            _state["tried"] = True
    return _state["module"]


def compile_seconds() -> float | None:
    """Return the seconds the first `load` took (building or loading the cache), or None before it."""
    return _state["seconds"]


def _build() -> Any | None:
    if os.environ.get(DISABLE_VARIABLE, "1").strip() == "0":
        logger.info("%s=0: the fused LIF kernel is off, and the eager kernels run", DISABLE_VARIABLE)
        return None
    start = time.monotonic()
    try:
        import torch
        from torch.utils.cpp_extension import load as load_extension

        build_dir = _build_directory(torch.__version__)
        _remove_stale_lock(build_dir)
        module = load_extension(
            name="stsep_fused_lif", sources=[str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir), verbose=False,
        )
    except Exception as error:  # A missing compiler or ninja raises several types.
        reason = " ".join(str(error).split())[:300]
        logger.warning(
            "The fused LIF kernel could not be built (%s); the eager kernels run instead, about 1.5 times slower. "
            "Install a C++ compiler and ninja, or set %s=0 to skip the attempt", reason, DISABLE_VARIABLE,
        )
        return None
    _state["seconds"] = time.monotonic() - start
    logger.debug("Fused LIF kernel ready in %.1f s", _state["seconds"])
    return module


def _build_directory(torch_version: str) -> Path:
    """Return (and create) the build directory: one per torch version, under torch's extension cache."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_extensions"
    )
    directory = Path(root) / f"stsep_fused_lif-torch{torch_version.replace('+', '_')}"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _remove_stale_lock(build_dir: Path) -> None:
    """Remove the lock of a build that was killed, which would make every later build wait forever.

    A build takes under a minute, so a lock older than `STALE_LOCK_S` has no
    live owner.
    """
    lock = build_dir / "lock"
    try:
        age_s = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age_s > STALE_LOCK_S:
        logger.warning("Removing %s, left %.0f s ago by a build that did not finish", lock, age_s)
        lock.unlink(missing_ok=True)
