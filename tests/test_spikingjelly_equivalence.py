"""Our neurons against SpikingJelly 2.0's multi-step LIFNode: same spikes, same gradients."""

import pytest
import torch

from stsep.neurons import LIF, NonStatefulNeuron

spikingjelly = pytest.importorskip(
    "spikingjelly.activation_based",
    reason="SpikingJelly 2.0 is not installed (pip install --no-deps spikingjelly==2.0.0 loguru)",
)
from spikingjelly.activation_based import functional, neuron, surrogate  # noqa: E402


pytestmark = pytest.mark.usefixtures("lif_kernel")


def reference_lif(*, tau=2.0, v_reset=0.0, soft_reset=False, detach_reset=True, sigmoid=False):
    return neuron.LIFNode(
        step_mode="m",
        tau=tau,
        decay_input=True,
        v_reset=None if soft_reset else v_reset,
        detach_reset=detach_reset,
        surrogate_function=surrogate.Sigmoid() if sigmoid else surrogate.ATan(),
    )


def run_both(ours, reference, x):
    """Return (our spikes, our grad, reference spikes, reference grad) for one backward."""
    grad = torch.randn_like(x)
    our_input = x.clone().requires_grad_(True)
    reference_input = x.clone().requires_grad_(True)

    functional.reset_net(reference)
    our_spikes = ours(our_input)
    reference_spikes = reference(reference_input)
    our_spikes.backward(grad)
    reference_spikes.backward(grad)
    return our_spikes, our_input.grad, reference_spikes, reference_input.grad


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"soft_reset": True},
        {"detach_reset": False},
        {"tau": 3.0},
        {"v_reset": -0.25},
        {"sigmoid": True},
    ],
    ids=["default", "soft-reset", "attached-reset", "tau3", "v_reset", "sigmoid"],
)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "phases"])
def test_lif_matches_spikingjelly(settings, fused):
    torch.manual_seed(0)
    x = torch.randn(8, 4, 16, 14, 14) * 1.5 + 0.5
    ours = LIF(
        tau=settings.get("tau", 2.0),
        v_reset=settings.get("v_reset", 0.0),
        soft_reset=settings.get("soft_reset", False),
        detach_reset=settings.get("detach_reset", True),
        surrogate="sigmoid" if settings.get("sigmoid") else "atan",
        fused=fused,
    )

    our_spikes, our_grad, reference_spikes, reference_grad = run_both(
        ours, reference_lif(**settings), x
    )

    assert torch.equal(our_spikes, reference_spikes)
    torch.testing.assert_close(our_grad, reference_grad, rtol=1e-5, atol=1e-6)


def test_lif_matches_spikingjelly_at_benchmark_shape():
    torch.manual_seed(1)
    x = torch.randn(8, 8, 64, 28, 28) * 1.5 + 0.5

    our_spikes, our_grad, reference_spikes, reference_grad = run_both(LIF(), reference_lif(), x)

    assert torch.equal(our_spikes, reference_spikes)
    torch.testing.assert_close(our_grad, reference_grad, rtol=1e-5, atol=1e-6)


def test_reference_state_reset_is_needed_but_ours_is_not():
    torch.manual_seed(2)
    x = torch.randn(4, 2, 32) * 2.0
    reference = reference_lif()
    ours = LIF()

    first = reference(x)
    second_without_reset = reference(x)  # carries the membrane potential over

    assert not torch.equal(first, second_without_reset)
    assert torch.equal(ours(x), first)
    assert torch.equal(ours(x), first)


def test_nsn_matches_spikingjelly_reset_every_step():
    torch.manual_seed(3)
    x = torch.randn(6, 4, 8, 5, 5) * 3.0
    reference = reference_lif()
    grad = torch.randn_like(x)
    our_input = x.clone().requires_grad_(True)

    reference_steps = []
    reference_input = x.clone().requires_grad_(True)
    for x_t in reference_input:
        functional.reset_net(reference)
        reference_steps.append(reference(x_t.unsqueeze(0))[0])
    reference_spikes = torch.stack(reference_steps)
    our_spikes = NonStatefulNeuron()(our_input)
    reference_spikes.backward(grad)
    our_spikes.backward(grad)

    assert torch.equal(our_spikes, reference_spikes)
    torch.testing.assert_close(our_input.grad, reference_input.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_spikes_match_spikingjelly(dtype):
    torch.manual_seed(4)
    x = (torch.randn(6, 3, 40) * 2.0).to(dtype)
    reference = reference_lif()

    with torch.no_grad():
        expected = reference(x.float())
        actual = LIF()(x)

    assert actual.dtype == dtype
    assert torch.equal(actual.float(), expected)
