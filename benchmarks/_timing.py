"""Timing and memory helpers shared by the benchmark scripts.

- :func:`time_call`: median wall time of a callable over repeats.
- :func:`time_interleaved`: the same for several callables, run in turn.
- :func:`run_in_subprocess`: run one benchmark configuration in a fresh
  Python process and return the JSON it prints, so that peak resident memory
  belongs to that configuration alone.
- :func:`peak_rss_mb` and :func:`current_rss_mb`: resident memory of this
  process. ``tracemalloc`` does not see PyTorch's allocations, so the
  benchmarks read the kernel's counters instead.
- :func:`format_rows`: a Markdown table of result rows.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "current_rss_mb",
    "format_rows",
    "peak_rss_mb",
    "run_in_subprocess",
    "time_call",
    "time_interleaved",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


def time_call(
    function: Callable[[], Any],
    *,
    repeats: int = 3,
    iterations: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Time ``function`` and return milliseconds per call.

    Each repeat runs ``iterations`` calls and takes their mean; the result
    gives the median and the minimum over ``repeats`` repeats, after
    ``warmup`` untimed calls. ``cpu_ms`` is the median process CPU time (all
    threads) per call, which other processes on a shared machine disturb less
    than wall time.

    Returns:
        ``{"median_ms", "min_ms", "cpu_ms", "repeats", "iterations"}``.
    """
    for _ in range(warmup):
        function()
    wall_ms = []
    cpu_ms = []
    for _ in range(repeats):
        wall_start = time.perf_counter()
        cpu_start = time.process_time()
        for _ in range(iterations):
            function()
        wall_ms.append((time.perf_counter() - wall_start) / iterations * 1e3)
        cpu_ms.append((time.process_time() - cpu_start) / iterations * 1e3)
    return {
        "median_ms": statistics.median(wall_ms),
        "min_ms": min(wall_ms),
        "cpu_ms": statistics.median(cpu_ms),
        "repeats": repeats,
        "iterations": iterations,
    }


def time_interleaved(
    cases: dict[str, Callable[[], Any]],
    *,
    repeats: int = 3,
    iterations: int = 5,
    warmup: int = 1,
) -> dict[str, dict[str, float]]:
    """Time several callables in turn, one repeat of each per round.

    Interleaving exposes every case to the same background load, which on a
    shared machine changes within seconds; the statistics are those of
    :func:`time_call`.

    Returns:
        ``{name: {"median_ms", "min_ms", "cpu_ms", "repeats", "iterations"}}``.
    """
    for function in cases.values():
        for _ in range(warmup):
            function()
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, function in cases.items():
            samples[name].append(time_call(function, repeats=1, iterations=iterations, warmup=0))
    return {
        name: {
            "median_ms": statistics.median(sample["median_ms"] for sample in runs),
            "min_ms": min(sample["min_ms"] for sample in runs),
            "cpu_ms": statistics.median(sample["cpu_ms"] for sample in runs),
            "repeats": repeats,
            "iterations": iterations,
        }
        for name, runs in samples.items()
    }


def peak_rss_mb() -> float:
    """Return the peak resident set size of this process in MiB.

    Reads ``VmHWM`` from ``/proc/self/status``, the peak of this process's
    own address space. ``ru_maxrss`` is no substitute in a child process:
    Linux carries the parent's peak over ``fork`` and ``exec``, so a child of
    a large parent reports the parent's peak. Elsewhere ``ru_maxrss`` is used.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Return the current resident set size of this process in MiB."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_in_subprocess(module: str, function: str, config: dict[str, Any], *, timeout_s: float = 900) -> dict:
    """Run ``module.function(config)`` in a new interpreter and return its JSON result.

    The function must print one JSON object as the last line of its stdout.

    Raises:
        RuntimeError: if the child fails or prints no JSON; the message has its stderr tail.
    """
    code = (
        "import json, sys\n"
        f"from {module} import {function}\n"
        "result = " + function + "(json.loads(sys.argv[1]))\n"
        "print(json.dumps(result))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(config)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark child {module}.{function}({config}) failed with exit code "
            f"{completed.returncode}: {completed.stderr[-2000:]}"
        )
    return json.loads(lines[-1])


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Format ``rows`` as a Markdown table with the given columns."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
