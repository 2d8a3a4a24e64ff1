"""Run the neuron, model and data benchmarks and check their targets.

Every target is a ratio to a baseline measured in the same run, so a change
in machine load shifts both sides alike:

=====================================  ================================  ========
comparison                             value                             target
=====================================  ================================  ========
stsep LIF vs SpikingJelly LIFNode      SpikingJelly time / LIF time      >= 3.0
stsep NSN vs stsep LIF                 NSN time / LIF time               <= 1.0
stsep LIF vs memory floor              LIF time / floor time             reported
vanilla step vs SpikingJelly SEW-18    SpikingJelly time / vanilla time  >= 1.2
memory of vanilla vs T                 relative deviation of the middle  <= 0.10
                                       T from the line through the
                                       outer two (and MiB per frame)
Ray Data vs bare decord, per core      Ray clips per decoder CPU second  >= 0.9
                                       / bare decord's
Ray Data vs DataLoader                 Ray clips/s / DataLoader clips/s  >= 1.0
=====================================  ================================  ========

Each target has a relative noise margin (:data:`NOISE_MARGIN`, 10%): a value
short of its target by less than the margin is reported as ``within
margin`` and does not fail the run. Only a miss beyond the margin makes the
script exit with status 1. The memory check is itself a tolerance and has no
extra margin.

Repeats: the neuron and model benchmarks interleave their cases and report
the median of ``--repeats`` rounds, and the ratios here are ratios of those
medians (``--basis min`` or ``--basis cpu`` use the minima or the
process CPU time instead). The data benchmark runs ``--repeats`` times with
one Ray instance, and each ratio is the median of the per-repeat ratios.

The script prints the machine (CPU model, cores, library versions) and the
1-minute load average before and after each benchmark, because the timings on
a shared machine are only as good as its load.

Usage::

    python benchmarks/run.py [--quick] [--only neurons,model,data] [--json results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._timing import format_rows

__all__ = [
    "BENCHMARKS",
    "NOISE_MARGIN",
    "TargetCheck",
    "check_data",
    "check_model",
    "check_neurons",
    "exit_status",
    "machine_info",
    "main",
]

logger = logging.getLogger("stsep.benchmarks.run")

BENCHMARKS: tuple[str, ...] = ("neurons", "model", "data")

# Relative noise margin of every timing target. 10% is a judgment: it covers
# the spread between interleaved rounds of one configuration on a lightly
# loaded machine (3 to 5% on 2 cores at a load average below 2), not heavy load.
NOISE_MARGIN = 0.10

# Targets (see the module docstring).
LIF_VS_SPIKINGJELLY = 3.0
NSN_OVER_LIF = 1.0
VANILLA_VS_SPIKINGJELLY = 1.2
MEMORY_LINEARITY_TOLERANCE = 0.10
RAY_VS_BARE_PER_CORE = 0.9
RAY_VS_DATALOADER = 1.0

# Timing column behind the neuron and model ratios, by --basis: the median wall
# time (default), the minimum wall time, or the median process CPU time.
BASES: dict[str, str] = {"median": "median_ms", "min": "min_ms", "cpu": "cpu_ms"}

MET, WITHIN_MARGIN, MISSED, REPORTED = "met", "within margin", "MISSED", "reported"


@dataclasses.dataclass(frozen=True)
class TargetCheck:
    """One compared quantity and its verdict.

    Attributes:
        benchmark: ``neurons``, ``model`` or ``data``.
        name: what is compared, for example ``stsep LIF vs spikingjelly LIFNode``.
        case: the configuration (shape, T, clip count).
        value: the measured ratio.
        target: the bound, or None for a reported-only value.
        direction: ``>=`` or ``<=``: which side of ``target`` passes.
        margin: relative noise margin allowed beyond ``target``.
        detail: extra context, such as MiB per frame.
        load: 1-minute load averages before and after the benchmark.
    """

    benchmark: str
    name: str
    case: str
    value: float
    target: float | None = None
    direction: str = ">="
    margin: float = NOISE_MARGIN
    detail: str = ""
    load: str = ""

    @property
    def status(self) -> str:
        """``met``, ``within margin``, ``MISSED`` or ``reported`` (no target)."""
        if self.target is None:
            return REPORTED
        if self.direction == ">=":
            if self.value >= self.target:
                return MET
            return WITHIN_MARGIN if self.value >= self.target * (1 - self.margin) else MISSED
        if self.direction == "<=":
            if self.value <= self.target:
                return MET
            return WITHIN_MARGIN if self.value <= self.target * (1 + self.margin) else MISSED
        raise ValueError(f"direction must be '>=' or '<=', got {self.direction!r}")

    def as_row(self) -> dict[str, Any]:
        """Return the check as a row for :func:`format_rows`."""
        target = "" if self.target is None else f"{self.direction} {self.target:g}"
        return {
            "benchmark": self.benchmark,
            "comparison": self.name,
            "case": self.case,
            "value": self.value,
            "target": target,
            "margin": "" if self.target is None or self.margin == 0 else f"{self.margin:.0%}",
            "status": self.status,
            "detail": self.detail,
            "load 1m before/after": self.load,
        }


def exit_status(checks: Sequence[TargetCheck]) -> int:
    """Return 1 when any check missed its target by more than its margin, else 0."""
    return int(any(check.status == MISSED for check in checks))


# Target checks. Each takes the rows of one benchmark module and returns checks.


def check_neurons(rows: Sequence[dict[str, Any]], *, basis: str = "median", load: str = "") -> list[TargetCheck]:
    """Check the LIF and NSN targets on the rows of :func:`benchmarks.neurons.run`, per shape."""
    key = BASES[basis]
    by_shape: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_shape.setdefault(row["shape"], {})[row["implementation"]] = row

    checks = []
    for shape, rows_by_name in by_shape.items():
        lif = rows_by_name.get("stsep LIF")
        if lif is None:
            continue
        reference = rows_by_name.get("spikingjelly LIFNode")
        if reference is not None:
            checks.append(
                TargetCheck(
                    "neurons", "stsep LIF vs spikingjelly LIFNode", shape, reference[key] / lif[key],
                    LIF_VS_SPIKINGJELLY, detail=f"{basis}: {lif[key]:.3g} vs {reference[key]:.3g} ms", load=load,
                )
            )
        nsn = rows_by_name.get("stsep NSN")
        if nsn is not None:
            checks.append(
                TargetCheck(
                    "neurons", "stsep NSN time / stsep LIF time", shape, nsn[key] / lif[key], NSN_OVER_LIF,
                    direction="<=", detail=f"{basis}: {nsn[key]:.3g} vs {lif[key]:.3g} ms", load=load,
                )
            )
        floor = rows_by_name.get("memory floor")
        if floor is not None:
            checks.append(
                TargetCheck(
                    "neurons", "stsep LIF time / memory floor", shape, lif[key] / floor[key],
                    detail=f"{basis}: {lif[key]:.3g} vs {floor[key]:.3g} ms", load=load,
                )
            )
    return checks


def memory_linearity(memory_rows: Sequence[dict[str, Any]], *, key: str = "peak_rss_mb") -> dict[str, float]:
    """Fit the line through the smallest and largest T and measure the middle T's deviation.

    Args:
        memory_rows: rows with ``num_frames`` and ``key`` (at least three distinct T).
        key: the memory column in MiB.

    Returns:
        ``mib_per_frame`` (slope), ``intercept_mib``, ``middle_frames``,
        ``predicted_mib``, ``measured_mib`` and ``relative_deviation``
        ``|measured - predicted| / (predicted - intercept)``: the miss as a
        fraction of the part of the memory that grows with T, so that a large
        constant part (weights, libraries) cannot hide a nonlinearity.

    Raises:
        ValueError: with fewer than three distinct T.
    """
    points = sorted({int(row["num_frames"]): float(row[key]) for row in memory_rows}.items())
    if len(points) < 3:
        raise ValueError(f"memory linearity needs at least three distinct T, got {[t for t, _ in points]}")
    (low_t, low_mib), (high_t, high_mib) = points[0], points[-1]
    middle_t, middle_mib = points[len(points) // 2]
    slope = (high_mib - low_mib) / (high_t - low_t)
    intercept = low_mib - slope * low_t
    predicted = intercept + slope * middle_t
    growing = predicted - intercept
    deviation = abs(middle_mib - predicted) / growing if growing > 0 else float("inf")
    return {
        "mib_per_frame": slope,
        "intercept_mib": intercept,
        "middle_frames": middle_t,
        "predicted_mib": predicted,
        "measured_mib": middle_mib,
        "relative_deviation": deviation,
    }


def check_model(results: dict[str, list[dict[str, Any]]], *, basis: str = "median", load: str = "") -> list[TargetCheck]:
    """Check the training-step and memory targets on the result of :func:`benchmarks.model.run`."""
    key = BASES[basis]
    steps = {row["variant"]: row for row in results.get("steps", [])}
    checks = []
    reference = steps.get("spikingjelly")
    if reference is not None:
        for variant, row in steps.items():
            if variant == "spikingjelly":
                continue
            case = f"T={row['num_frames']} B={row['batch']} {row['size']}x{row['size']}"
            ratio = reference[key] / row[key]
            detail = f"{basis}: {row[key]:.4g} vs {reference[key]:.4g} ms"
            if variant == "vanilla":
                checks.append(
                    TargetCheck("model", "vanilla step vs spikingjelly SEW-ResNet-18", case, ratio,
                                VANILLA_VS_SPIKINGJELLY, detail=detail, load=load)
                )
            else:
                checks.append(
                    TargetCheck("model", f"{variant} step vs spikingjelly SEW-ResNet-18", case, ratio,
                                detail=detail, load=load)
                )

    memory = results.get("memory", [])
    if len({row["num_frames"] for row in memory}) >= 3:
        fit = memory_linearity(memory)
        frames = sorted({int(row["num_frames"]) for row in memory})
        checks.append(
            TargetCheck(
                "model", "vanilla peak memory vs T: deviation from a line", f"T={','.join(map(str, frames))}",
                fit["relative_deviation"], MEMORY_LINEARITY_TOLERANCE, direction="<=", margin=0.0,
                detail=(
                    f"{fit['mib_per_frame']:.1f} MiB per frame; T={fit['middle_frames']}: "
                    f"{fit['measured_mib']:.0f} MiB measured, {fit['predicted_mib']:.0f} MiB on the line"
                ),
                load=load,
            )
        )
    return checks


def _median_by_method(repeats: Sequence[Sequence[dict[str, Any]]], column: str) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for rows in repeats:
        for row in rows:
            values.setdefault(row["method"], []).append(float(row[column]))
    return {method: statistics.median(samples) for method, samples in values.items()}


def check_data(repeats: Sequence[Sequence[dict[str, Any]]], *, load: str = "") -> list[TargetCheck]:
    """Check the Ray Data targets on one or more results of :func:`benchmarks.data_pipeline.run`.

    Each ratio is the median over the repeats of the ratio within one repeat.
    """
    per_core = _median_by_method(repeats, "vs_bare_per_core")
    vs_loader = _median_by_method(repeats, "vs_dataloader")
    rates = _median_by_method(repeats, "clips_per_s")
    if "ray data" not in per_core:
        return []
    first = repeats[0][0]
    case = f"{first.get('clips', '?')} clips, T={first.get('num_frames', '?')}, {len(repeats)} repeat(s)"
    return [
        TargetCheck(
            "data", "ray data vs bare decord, clips per decoder CPU second", case, per_core["ray data"],
            RAY_VS_BARE_PER_CORE, detail=f"median of {len(repeats)}", load=load,
        ),
        TargetCheck(
            "data", "ray data vs dataloader, clips per second", case, vs_loader["ray data"], RAY_VS_DATALOADER,
            detail=f"{rates['ray data']:.3g} vs {rates.get('dataloader', float('nan')):.3g} clips/s", load=load,
        ),
    ]


# Machine description.


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001  (metadata lookups fail in many ways; the version is informational)
        return "not installed"


def load_average() -> float:
    """Return the 1-minute load average (NaN where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine_info() -> dict[str, Any]:
    """Return the CPU model, core counts, library versions and torch's thread count."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": _version("ray"),
        "spikingjelly": _version("spikingjelly"),
        "decord": _version("decord"),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


# Benchmark runners. Each returns (raw result, checks).


def _run_neurons(*, quick: bool, repeats: int, basis: str) -> tuple[Any, list[TargetCheck], str]:
    from benchmarks import neurons

    rows = neurons.run(
        shapes=neurons.QUICK_SHAPES if quick else neurons.DEFAULT_SHAPES,
        repeats=repeats,
        iterations=3 if quick else 10,
        include_phases=not quick,
    )
    table = format_rows(
        rows,
        ["shape", "implementation", "median_ms", "min_ms", "cpu_ms", "vs_spikingjelly", "vs_spikingjelly_min",
         "vs_spikingjelly_cpu", "vs_floor", "threads"],
    )
    return rows, check_neurons(rows, basis=basis), table


QUICK_MODEL_VARIANTS: tuple[str, ...] = ("vanilla", "stsep-s1234-state", "spikingjelly")


def _run_model(*, quick: bool, repeats: int, basis: str) -> tuple[Any, list[TargetCheck], str]:
    from benchmarks import model

    if quick:
        results = model.run(
            variants=QUICK_MODEL_VARIANTS, num_frames=4, size=64, repeats=repeats, steps=1, memory_frames=(4, 8, 16)
        )
    else:
        results = model.run(repeats=repeats, memory_frames=(4, 8, 16))
    table = "\n\n".join(
        [
            format_rows(
                results["steps"],
                ["variant", "num_frames", "batch", "size", "median_ms", "min_ms", "cpu_ms", "vs_spikingjelly",
                 "vs_spikingjelly_min", "vs_spikingjelly_cpu", "peak_rss_mb", "model_rss_mb", "params"],
            ),
            format_rows(results["memory"], ["variant", "num_frames", "batch", "size", "step_ms", "peak_rss_mb",
                                            "model_rss_mb"]),
        ]
    )
    return results, check_model(results, basis=basis), table


def _run_data(*, quick: bool, repeats: int, basis: str) -> tuple[Any, list[TargetCheck], str]:
    import ray

    from benchmarks import data_pipeline

    cores = 2
    # A quick run decodes each method once: one repeat of the three methods
    # with start-up subtracted already takes about two minutes on 2 cores.
    repeats = 1 if quick else repeats
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=cores, include_dashboard=False)
    try:
        results = []
        for index in range(repeats):
            logger.info("data benchmark repeat %d of %d", index + 1, repeats)
            results.append(data_pipeline.run(num_clips=48 if quick else 160, cores=cores, rounds=1))
    finally:
        if started:
            ray.shutdown()
    tables = [
        format_rows(
            rows,
            ["method", "processes", "clips", "seconds", "startup_s", "clips_per_s", "clips_per_decoder_cpu_s",
             "clips_per_cpu_s", "vs_bare_per_core", "vs_dataloader"],
        )
        for rows in results
    ]
    table = "\n\n".join(f"repeat {index + 1}:\n{text}" for index, text in enumerate(tables))
    return results, check_data(results), table


RUNNERS: dict[str, Callable[..., tuple[Any, list[TargetCheck], str]]] = {
    "neurons": _run_neurons,
    "model": _run_model,
    "data": _run_data,
}


def _parse_only(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"invalid --only {text!r}: expected a comma-separated subset of {','.join(BENCHMARKS)}"
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks and check their targets.")
    parser.add_argument(
        "--quick", action="store_true",
        help="small shapes and clip counts (neurons: one shape; model: T=4, 64x64, three variants, "
             "memory at T=4, 8, 16; data: 48 clips, one repeat)",
    )
    parser.add_argument(
        "--only", type=_parse_only, default=list(BENCHMARKS),
        help="comma-separated benchmarks to run: neurons, model, data (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; ratios use medians (default: 3)")
    parser.add_argument(
        "--basis", choices=sorted(BASES), default="median",
        help="timing statistic behind the neuron and model ratios: median wall time (default), "
             "minimum wall time, or median process CPU time",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the machine, raw rows and checks here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("stsep.benchmarks", "benchmarks", "__main__"):
        logging.getLogger(name).setLevel(logging.INFO)

    if args.threads:
        # Child processes of the model benchmark read the variable when torch starts.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)

    machine = machine_info()
    print("## Machine\n")
    print(format_rows([machine], list(machine)))
    print(f"\ncommand: {' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}")

    checks: list[TargetCheck] = []
    raw: dict[str, Any] = {}
    loads: dict[str, list[float]] = {"all": [load_average()]}
    for name in args.only:
        before = load_average()
        started = time.perf_counter()
        logger.info("running the %s benchmark (load average %.2f)", name, before)
        result, section_checks, table = RUNNERS[name](quick=args.quick, repeats=args.repeats, basis=args.basis)
        after = load_average()
        load = f"{before:.1f} / {after:.1f}"
        loads[name] = [before, after]
        section_checks = [dataclasses.replace(check, load=load) for check in section_checks]
        checks.extend(section_checks)
        raw[name] = result
        print(f"\n## {name} ({time.perf_counter() - started:.0f} s, load average {load})\n")
        print(table)

    print(f"\n## Targets (ratios from the {args.basis} of {args.repeats} repeats)\n")
    print(
        format_rows(
            [check.as_row() for check in checks],
            ["benchmark", "comparison", "case", "value", "target", "margin", "status", "detail",
             "load 1m before/after"],
        )
    )
    loads["all"].append(load_average())
    print(f"\nload average (1 min) before and after all benchmarks: {loads['all'][0]:.1f} / {loads['all'][1]:.1f}")
    if args.quick:
        print(
            "quick run: small shapes, few iterations and one data repeat, so the statuses above are a smoke "
            "check; the targets apply to the full run"
        )
    highest_load = max(load for section in loads.values() for load in section)
    if highest_load > machine["usable_cores"]:
        print(
            f"warning: the load average reached {highest_load:.1f} on {machine['usable_cores']} usable cores, so other "
            "jobs shared the CPUs and the ratios above are unreliable; rerun when the load is below the core count"
        )
    status = exit_status(checks)
    missed = [check for check in checks if check.status == MISSED]
    print(f"\n{len(missed)} target(s) missed beyond the margin" if missed else "\nall targets met or within margin")

    if args.json is not None:
        document = {
            "machine": machine,
            "argv": list(argv if argv is not None else sys.argv[1:]),
            "loads": loads,
            "raw": raw,
            "checks": [dict(dataclasses.asdict(check), status=check.status) for check in checks],
        }
        args.json.write_text(json.dumps(document, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
