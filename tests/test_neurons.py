"""LIF, non-stateful neuron and surrogate gradients against hand-derived values."""

import math

import pytest
import torch

from stsep.neurons import LIF, NonStatefulNeuron
from stsep.neurons.fused import load as load_compiled_kernel  # before any test replaces it
from stsep.surrogate import ATanSpike, SigmoidSpike, surrogate_gradient

pytestmark = pytest.mark.usefixtures("lif_kernel")

BOTH_PATHS = pytest.mark.parametrize("fused", [True, False], ids=["fused", "phases"])


def constant_input(value: float, num_steps: int) -> torch.Tensor:
    """A constant input ``[T, B=1, 1]``."""
    return torch.full((num_steps, 1, 1), value)


def spike_train(spikes: torch.Tensor) -> list[int]:
    return [int(s) for s in spikes.flatten()]


@BOTH_PATHS
def test_lif_below_threshold_never_spikes(fused):
    # tau = 2, X = 0.9: H approaches 0.9 < v_threshold = 1 from below.
    neuron = LIF(fused=fused)

    spikes = neuron(constant_input(0.9, 60))

    assert spikes.sum() == 0


@BOTH_PATHS
def test_lif_periodic_spike_train_hard_reset(fused):
    # X = 1.5: H0 = 0.75; H1 = 0.75 + (1.5 - 0.75) / 2 = 1.125 -> spike, V = 0; repeat.
    # X = 1.2: H = 0.6, 0.9, 1.05 -> spike, V = 0; repeat with period 3.
    neuron = LIF(fused=fused)

    period_two = spike_train(neuron(constant_input(1.5, 8)))
    period_three = spike_train(neuron(constant_input(1.2, 9)))

    assert period_two == [0, 1] * 4
    assert period_three == [0, 0, 1] * 3


@BOTH_PATHS
def test_lif_soft_reset_spike_train(fused):
    # X = 1.8, soft reset V = H - 1:
    # H = 0.9 | 1.35 s, V = .35 | 1.075 s, V = .075 | .9375 | 1.36875 s, V = .36875 |
    #     1.084375 s, V = .084375 | .9421875
    # Hard reset: H = 0.9 | 1.35 s, V = 0 | 0.9 | 1.35 s ... (period 2).
    soft = LIF(soft_reset=True, fused=fused)
    hard = LIF(fused=fused)

    soft_train = spike_train(soft(constant_input(1.8, 7)))
    hard_train = spike_train(hard(constant_input(1.8, 7)))

    assert soft_train == [0, 1, 1, 0, 1, 1, 0]
    assert hard_train == [0, 1, 0, 1, 0, 1, 0]


def test_reset_phase_values():
    hard = LIF(v_reset=-0.2)
    soft = LIF(v_reset=-0.2, soft_reset=True)
    h = torch.tensor([1.3, 0.4])
    spike = torch.tensor([1.0, 0.0])

    hard_v = hard.neuronal_reset(h, spike)
    soft_v = soft.neuronal_reset(h, spike)

    torch.testing.assert_close(hard_v, torch.tensor([-0.2, 0.4]))
    torch.testing.assert_close(soft_v, torch.tensor([0.3, 0.4]))


def test_charge_phase_from_reset_potential():
    neuron = LIF(tau=4.0, v_reset=-0.5)
    x = torch.tensor([2.0])

    first = neuron.neuronal_charge(x, None)
    later = neuron.neuronal_charge(x, torch.tensor([0.5]))

    # H = v_reset + X / tau = -0.5 + 0.5; H = 0.5 + (2 - (0.5 + 0.5)) / 4 = 0.75.
    torch.testing.assert_close(first, torch.tensor([0.0]))
    torch.testing.assert_close(later, torch.tensor([0.75]))


@pytest.mark.parametrize(
    ("surrogate", "alpha", "x", "expected"),
    [
        ("atan", 2.0, 0.0, 1.0),
        ("atan", 2.0, 0.5, 1.0 / (1.0 + (math.pi / 2) ** 2)),
        ("atan", 2.0, -1.0, 1.0 / (1.0 + math.pi**2)),
        ("atan", 4.0, 0.25, 2.0 / (1.0 + (math.pi / 2) ** 2)),
        ("sigmoid", 4.0, 0.0, 1.0),
        ("sigmoid", 4.0, 1.0, 4.0 / (1 + math.exp(-4.0)) * (1 - 1 / (1 + math.exp(-4.0)))),
        ("sigmoid", 2.0, -0.5, 2.0 / (1 + math.exp(1.0)) * (1 - 1 / (1 + math.exp(1.0)))),
    ],
)
def test_surrogate_gradient_values(surrogate, alpha, x, expected):
    actual = surrogate_gradient(torch.tensor([x], dtype=torch.float64), surrogate=surrogate, alpha=alpha)

    assert actual.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("surrogate", ["atan", "sigmoid"])
@BOTH_PATHS
def test_neuron_gradient_is_surrogate_over_tau(surrogate, fused):
    # NSN: H = X / tau, so dS/dX = sg(X / tau - v_th) / tau.
    neuron = NonStatefulNeuron(tau=2.0, surrogate=surrogate, fused=fused)
    x = torch.tensor([[0.5, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)

    neuron(x).sum().backward()

    alpha = neuron.alpha
    expected = surrogate_gradient(x.detach() / 2.0 - 1.0, surrogate=surrogate, alpha=alpha) / 2.0
    torch.testing.assert_close(x.grad, expected)


@BOTH_PATHS
def test_lif_gradient_through_time(fused):
    # X = [1.5, 1.5]: H0 = 0.75 (no spike, V0 = H0), H1 = 1.125 (spike); loss = S1.
    # dL/dX1 = sg(0.125) / 2; dL/dX0 = sg(0.125) * (1 - 1/2) * 1 * (1/2) = sg(0.125) / 4.
    neuron = LIF(fused=fused)
    x = torch.full((2, 1), 1.5, dtype=torch.float64, requires_grad=True)

    spikes = neuron(x)
    spikes[1].sum().backward()

    sg = 1.0 / (1.0 + (math.pi / 2 * 2.0 * 0.125) ** 2)
    torch.testing.assert_close(x.grad.flatten(), torch.tensor([sg / 4, sg / 2], dtype=torch.float64))


@pytest.mark.parametrize("spike_class", [ATanSpike, SigmoidSpike], ids=["atan", "sigmoid"])
@pytest.mark.parametrize("alpha", [1.0, 2.0, 4.0])
def test_surrogate_gradcheck(spike_class, alpha):
    # smooth=True returns the primitive, whose numerical derivative the
    # surrogate gradient must match.
    x = torch.linspace(-2.0, 2.0, 17, dtype=torch.float64, requires_grad=True)

    assert torch.autograd.gradcheck(lambda value: spike_class.apply(value, alpha, True), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("neuron_class", [LIF, NonStatefulNeuron])
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid"])
@BOTH_PATHS
def test_gradients_finite_for_large_potentials(dtype, neuron_class, surrogate, fused):
    magnitudes = torch.tensor([-1e4, -3e3, -1.0, 0.0, 1.0, 2.0, 3e3, 1e4])
    x = (magnitudes.repeat(4, 2, 1)).to(dtype).requires_grad_(True)
    neuron = neuron_class(surrogate=surrogate, fused=fused)

    spikes = neuron(x)
    (spikes * torch.randn_like(spikes)).sum().backward()

    assert spikes.dtype == dtype
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"soft_reset": True},
        {"detach_reset": False},
        {"detach_reset": False, "soft_reset": True},
        {"v_reset": -0.3, "detach_reset": False},
        {"surrogate": "sigmoid", "tau": 3.0},
    ],
    ids=["default", "soft", "attached", "soft-attached", "v_reset", "sigmoid-tau3"],
)
def test_fused_matches_phases(settings):
    torch.manual_seed(0)
    x = (torch.randn(6, 3, 5, 4) * 1.5 + 0.5).double()
    fused_input = x.clone().requires_grad_(True)
    phases_input = x.clone().requires_grad_(True)
    grad = torch.randn_like(x)

    fused_spikes = LIF(fused=True, **settings)(fused_input)
    phases_spikes = LIF(fused=False, **settings)(phases_input)
    fused_spikes.backward(grad)
    phases_spikes.backward(grad)

    assert torch.equal(fused_spikes, phases_spikes)
    torch.testing.assert_close(fused_input.grad, phases_input.grad)


@BOTH_PATHS
def test_nsn_equals_lif_reset_before_each_step(fused):
    torch.manual_seed(1)
    x = torch.randn(5, 2, 3, 4) * 3.0
    nsn = NonStatefulNeuron(fused=fused)
    lif = LIF(fused=fused)

    expected = torch.stack([lif(x_t.unsqueeze(0))[0] for x_t in x])
    actual = nsn(x)

    assert torch.equal(actual, expected)


@pytest.mark.parametrize("neuron_class", [LIF, NonStatefulNeuron])
def test_neuron_keeps_no_state_between_calls(neuron_class):
    torch.manual_seed(2)
    neuron = neuron_class()
    first, other = torch.randn(2, 4, 3, 8) * 3.0

    before = neuron(first)
    neuron(other)
    after = neuron(first)

    assert torch.equal(before, after)


def test_learnable_tau_gets_gradient_and_starts_at_tau():
    torch.manual_seed(3)
    neuron = LIF(tau=3.0, learnable_tau=True)
    reference = LIF(tau=3.0)
    x = torch.randn(4, 2, 6) * 2.0

    spikes = neuron(x)
    (spikes * torch.arange(spikes.numel()).reshape(spikes.shape)).sum().backward()

    assert neuron.tau == pytest.approx(3.0)
    assert neuron.tau_logit.grad is not None
    assert neuron.tau_logit.grad.abs() > 0
    assert torch.equal(spikes, reference(x))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"tau": 1.0}, ValueError),
        ({"tau": "2"}, ValueError),
        ({"v_threshold": 0.0, "v_reset": 0.5}, ValueError),
        ({"surrogate": "relu"}, ValueError),
        ({"alpha": -1.0}, ValueError),
        ({"soft_reset": 1}, TypeError),
    ],
)
def test_invalid_neuron_settings_rejected(kwargs, error):
    with pytest.raises(error):
        LIF(**kwargs)


def test_neuron_rejects_one_dimensional_input():
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\]"):
        LIF()(torch.ones(5))


@pytest.mark.parametrize(
    "neuron",
    [LIF(), LIF(soft_reset=True), LIF(detach_reset=False), LIF(v_reset=0.1), NonStatefulNeuron()],
    ids=["lif", "soft", "attached", "v_reset", "nsn"],
)
def test_fused_kernels_allocate_on_input_device(neuron):
    # The meta device rejects any mix with CPU buffers, as CUDA would.
    x = torch.empty(4, 2, 8, device="meta", requires_grad=True)

    spikes = neuron(x)
    spikes.backward(torch.empty_like(spikes))

    assert spikes.device.type == "meta"
    assert x.grad.device.type == "meta"


def test_compiled_kernel_runs_for_float32_on_cpu(lif_kernel, monkeypatch):
    from stsep.neurons import fused

    calls = []
    real_load = fused.load

    class Spy:
        def __init__(self, module):
            self.module = module

        def lif_forward(self, *args):
            calls.append("forward")
            return self.module.lif_forward(*args)

        def lif_backward(self, *args):
            calls.append("backward")
            return self.module.lif_backward(*args)

    monkeypatch.setattr(fused, "load", lambda: None if real_load() is None else Spy(real_load()))
    x = torch.randn(4, 2, 3, 5, requires_grad=True)

    LIF()(x).sum().backward()
    LIF()(x.detach().double().requires_grad_()).sum().backward()  # float64 stays eager

    assert calls == ([] if lif_kernel == "eager" else ["forward", "backward"])


def test_compiled_kernel_falls_back_with_one_warning(monkeypatch, caplog):
    import torch.utils.cpp_extension

    from stsep.neurons import fused

    def no_compiler(**_):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(fused, "_state", {"tried": False, "module": None, "seconds": None})
    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    monkeypatch.delenv(fused.DISABLE_VARIABLE, raising=False)

    assert load_compiled_kernel() is None
    assert load_compiled_kernel() is None
    warnings = [record for record in caplog.records if "could not be built" in record.getMessage()]
    assert len(warnings) == 1
    assert "Ninja is required" in warnings[0].getMessage()
    assert fused.DISABLE_VARIABLE in warnings[0].getMessage()


def test_compiled_kernel_can_be_switched_off(monkeypatch):
    from stsep.neurons import fused

    monkeypatch.setattr(fused, "_state", {"tried": False, "module": None, "seconds": None})
    monkeypatch.setenv(fused.DISABLE_VARIABLE, "0")

    assert load_compiled_kernel() is None


def test_stale_build_lock_is_removed(tmp_path, caplog):
    import os
    import time

    from stsep.neurons import fused

    fresh, stale = tmp_path / "fresh", tmp_path / "stale"
    for directory, age_s in ((fresh, 10.0), (stale, fused.STALE_LOCK_S + 60.0)):
        directory.mkdir()
        (directory / "lock").write_text("")
        then = time.time() - age_s
        os.utime(directory / "lock", (then, then))

    fused._remove_stale_lock(fresh)
    fused._remove_stale_lock(stale)

    assert (fresh / "lock").exists()  # a build may still own it
    assert not (stale / "lock").exists()
    assert "did not finish" in caplog.text


def test_inference_spikes_match_training(lif_kernel):
    torch.manual_seed(0)
    x = torch.randn(6, 2, 3, 4, 4) * 2 + 0.5

    with torch.no_grad():
        inference = LIF()(x)
    training = LIF()(x.clone().requires_grad_(True))

    assert torch.equal(inference, training.detach())
