"""Benchmark aggregator targets, the GPU script without a GPU, and neuron memory layouts."""

import math

import pytest
import torch

from benchmarks import gpu, neurons
from benchmarks import run as aggregator
from benchmarks.run import MET, MISSED, REPORTED, WITHIN_MARGIN, TargetCheck
from stsep.neurons import LIF, NonStatefulNeuron


def neuron_rows(*, lif_ms: float, nsn_ms: float, reference_ms: float, floor_ms: float) -> list[dict]:
    times = {
        "stsep LIF": lif_ms,
        "stsep NSN": nsn_ms,
        "spikingjelly LIFNode": reference_ms,
        "memory floor": floor_ms,
    }
    return [
        {"shape": "8x8x64x28x28", "implementation": name, "median_ms": ms, "min_ms": ms * 0.9, "cpu_ms": ms * 2}
        for name, ms in times.items()
    ]


def model_results(*, vanilla_ms: float, reference_ms: float, memory_mib: dict[int, float]) -> dict:
    shape = {"num_frames": 8, "batch": 2, "size": 112}
    steps = [
        {"variant": "vanilla", **shape, "median_ms": vanilla_ms, "min_ms": vanilla_ms, "cpu_ms": vanilla_ms},
        {"variant": "ns4", **shape, "median_ms": vanilla_ms / 2, "min_ms": vanilla_ms / 2, "cpu_ms": vanilla_ms},
        {"variant": "spikingjelly", **shape, "median_ms": reference_ms, "min_ms": reference_ms,
         "cpu_ms": reference_ms},
    ]
    memory = [{"variant": "vanilla", "num_frames": frames, "peak_rss_mb": mib} for frames, mib in memory_mib.items()]
    return {"steps": steps, "memory": memory}


def data_rows(*, per_core: float, vs_loader: float) -> list[dict]:
    return [
        {"method": "bare decord", "clips": 160, "num_frames": 8, "clips_per_s": 5.0, "vs_bare_per_core": 1.0,
         "vs_dataloader": 0.5},
        {"method": "dataloader", "clips": 152, "num_frames": 8, "clips_per_s": 10.0, "vs_bare_per_core": 1.0,
         "vs_dataloader": 1.0},
        {"method": "ray data", "clips": 152, "num_frames": 8, "clips_per_s": 10.0 * vs_loader,
         "vs_bare_per_core": per_core, "vs_dataloader": vs_loader},
    ]


def by_name(checks: list[TargetCheck]) -> dict[str, TargetCheck]:
    return {check.name: check for check in checks}


# Target verdicts and exit status


@pytest.mark.parametrize(
    "value, direction, expected",
    [
        (3.2, ">=", MET),
        (3.0, ">=", MET),
        (2.8, ">=", WITHIN_MARGIN),
        (2.6, ">=", MISSED),
        (0.9, "<=", MET),
        (1.05, "<=", WITHIN_MARGIN),
        (1.2, "<=", MISSED),
    ],
)
def test_target_status_with_margin(value, direction, expected):
    target = 3.0 if direction == ">=" else 1.0

    check = TargetCheck("neurons", "ratio", "case", value, target, direction=direction, margin=0.1)

    assert check.status == expected


def test_target_without_bound_is_reported():
    check = TargetCheck("neurons", "LIF over floor", "case", 12.0)

    assert check.status == REPORTED
    assert check.as_row()["target"] == ""


def test_zero_margin_tolerance_has_no_slack():
    check = TargetCheck("model", "deviation", "case", 0.105, 0.10, direction="<=", margin=0.0)

    assert check.status == MISSED


def test_exit_status_only_for_missed():
    met = TargetCheck("x", "a", "c", 2.0, 1.0)
    within = TargetCheck("x", "b", "c", 0.95, 1.0)
    reported = TargetCheck("x", "c", "c", 0.1)
    missed = TargetCheck("x", "d", "c", 0.5, 1.0)

    assert aggregator.exit_status([met, within, reported]) == 0
    assert aggregator.exit_status([met, missed]) == 1
    assert aggregator.exit_status([]) == 0


def test_invalid_direction_raises():
    check = TargetCheck("x", "a", "c", 1.0, 1.0, direction="==")

    with pytest.raises(ValueError, match="direction"):
        check.status


# Neuron targets


def test_neuron_checks_use_same_run_ratios():
    rows = neuron_rows(lif_ms=10.0, nsn_ms=4.0, reference_ms=35.0, floor_ms=2.0)

    checks = by_name(aggregator.check_neurons(rows))

    lif = checks["stsep LIF vs spikingjelly LIFNode"]
    assert lif.value == pytest.approx(3.5)
    assert lif.status == MET
    nsn = checks["stsep NSN time / stsep LIF time"]
    assert nsn.value == pytest.approx(0.4)
    assert nsn.status == MET
    floor = checks["stsep LIF time / memory floor"]
    assert floor.value == pytest.approx(5.0)
    assert floor.status == REPORTED


def test_neuron_checks_flag_slow_lif_and_nsn():
    rows = neuron_rows(lif_ms=10.0, nsn_ms=12.0, reference_ms=25.0, floor_ms=2.0)

    checks = by_name(aggregator.check_neurons(rows))

    assert checks["stsep LIF vs spikingjelly LIFNode"].status == MISSED
    assert checks["stsep NSN time / stsep LIF time"].status == MISSED


def test_neuron_checks_follow_basis():
    rows = neuron_rows(lif_ms=10.0, nsn_ms=4.0, reference_ms=35.0, floor_ms=2.0)
    for row in rows:
        if row["implementation"] == "stsep LIF":
            row["cpu_ms"] = 35.0

    checks = by_name(aggregator.check_neurons(rows, basis="cpu"))

    assert checks["stsep LIF vs spikingjelly LIFNode"].value == pytest.approx(2.0)


# Model targets


def test_model_check_vanilla_and_linear_memory():
    results = model_results(vanilla_ms=800.0, reference_ms=1000.0, memory_mib={4: 500.0, 8: 700.0, 16: 1100.0})

    checks = by_name(aggregator.check_model(results))

    vanilla = checks["vanilla step vs spikingjelly SEW-ResNet-18"]
    assert vanilla.value == pytest.approx(1.25)
    assert vanilla.status == MET
    assert checks["ns4 step vs spikingjelly SEW-ResNet-18"].status == REPORTED
    memory = checks["vanilla peak memory vs T: deviation from a line"]
    assert memory.value == pytest.approx(0.0)
    assert memory.status == MET
    assert "50.0 MiB per frame" in memory.detail


def test_model_check_flags_slow_step_and_curved_memory():
    results = model_results(vanilla_ms=1000.0, reference_ms=1000.0, memory_mib={4: 500.0, 8: 900.0, 16: 1100.0})

    checks = by_name(aggregator.check_model(results))

    assert checks["vanilla step vs spikingjelly SEW-ResNet-18"].status == MISSED
    assert checks["vanilla peak memory vs T: deviation from a line"].status == MISSED


def test_memory_linearity_measures_growing_part():
    rows = [{"num_frames": t, "peak_rss_mb": mib} for t, mib in [(4, 1000.0), (8, 1110.0), (16, 1300.0)]]

    fit = aggregator.memory_linearity(rows)

    # Line through (4, 1000) and (16, 1300): 25 MiB per frame, 1100 MiB at T=8, of which 200 grow with T.
    assert fit["mib_per_frame"] == pytest.approx(25.0)
    assert fit["predicted_mib"] == pytest.approx(1100.0)
    assert fit["relative_deviation"] == pytest.approx(10.0 / 200.0)


def test_memory_linearity_needs_three_points():
    rows = [{"num_frames": t, "peak_rss_mb": 100.0 * t} for t in (4, 16)]

    with pytest.raises(ValueError, match="three distinct T"):
        aggregator.memory_linearity(rows)


def test_memory_linearity_flat_memory_is_infinite():
    rows = [{"num_frames": t, "peak_rss_mb": 500.0} for t in (4, 8, 16)]

    fit = aggregator.memory_linearity(rows)

    assert math.isinf(fit["relative_deviation"])


# Data targets


def test_data_checks_take_median_of_repeats():
    repeats = [
        data_rows(per_core=0.95, vs_loader=1.1),
        data_rows(per_core=0.50, vs_loader=0.4),
        data_rows(per_core=0.92, vs_loader=1.05),
    ]

    checks = by_name(aggregator.check_data(repeats))

    per_core = checks["ray data vs bare decord, clips per decoder CPU second"]
    assert per_core.value == pytest.approx(0.92)
    assert per_core.status == MET
    loader = checks["ray data vs dataloader, clips per second"]
    assert loader.value == pytest.approx(1.05)
    assert loader.status == MET


def test_data_checks_flag_slow_pipeline():
    checks = by_name(aggregator.check_data([data_rows(per_core=0.6, vs_loader=0.3)]))

    assert checks["ray data vs bare decord, clips per decoder CPU second"].status == MISSED
    assert checks["ray data vs dataloader, clips per second"].status == MISSED


# Command line


def test_only_rejects_unknown_benchmark():
    with pytest.raises(SystemExit):
        aggregator.main(["--only", "neurons,gpu"])


def test_neurons_smoke_prints_targets(monkeypatch, capsys):
    monkeypatch.setattr(neurons, "QUICK_SHAPES", ((2, 2, 4, 6, 6),))

    status = aggregator.main(["--quick", "--only", "neurons", "--repeats", "1"])

    output = capsys.readouterr().out
    assert status in (0, 1)
    assert "## Machine" in output
    assert "stsep LIF vs spikingjelly LIFNode" in output
    assert "stsep LIF time / memory floor" in output
    assert "load average (1 min) before and after all benchmarks" in output


# GPU script


def test_gpu_script_without_gpu_prints_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    status = gpu.main([])

    output = capsys.readouterr().out
    assert status == 0
    assert output == gpu.NO_GPU_MESSAGE + "\n"


def test_gpu_script_step_path_on_cpu(capsys):
    argv = ["--device", "cpu", "--variants", "vanilla", "--precisions", "fp32,bf16", "--batch", "1",
            "--frames", "2", "--size", "32", "--repeats", "1", "--iterations", "1", "--skip-input"]

    status = gpu.main(argv)

    output = capsys.readouterr().out
    assert status == 0
    assert "| vanilla | fp32 | True |" in output
    assert "| vanilla | bf16 | True |" in output


# Neuron kernels keep channels-last layouts (no copy per neuron in a channels-last network)


@pytest.mark.parametrize("neuron_class", [LIF, NonStatefulNeuron])
def test_neuron_keeps_channels_last_layout(neuron_class):
    torch.manual_seed(0)
    frames = torch.randn(6, 5, 7, 7) * 2 + 0.5  # [T * B, C, H, W] with T = 3, B = 2
    channels_last = frames.to(memory_format=torch.channels_last).unflatten(0, (3, 2)).requires_grad_(True)
    contiguous = frames.unflatten(0, (3, 2)).clone().requires_grad_(True)
    grad = torch.randn(3, 2, 5, 7, 7)
    neuron = neuron_class()

    spikes_cl = neuron(channels_last)
    spikes_cl.backward(grad)
    spikes = neuron(contiguous)
    spikes.backward(grad)

    assert spikes_cl.stride() == channels_last.stride()
    assert torch.equal(spikes_cl, spikes)
    assert torch.equal(channels_last.grad, contiguous.grad)

