"""SEW-ResNet and STSep models: stage maps, shapes, time order, training, profiling."""

import pytest
import torch
from torch import nn

from stsep import build_model
from stsep.models import STSepBlock
from stsep.neurons import LIF, NonStatefulNeuron, SpikingNeuron
from stsep.profile import (
    DEFAULT_FIRING_RATE,
    count_operations,
    estimate_energy_mj,
    record_firing_rates,
    record_stage_outputs,
)

WIDTH = 0.125  # stage channels 8, 16, 32, 64
VARIANT_KINDS = ["vanilla", "ns2", "rns1", "ns4", "stsep-s34-state", "stsep-s1234-nostate"]


def make_model(variant: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(variant, num_classes=4, width=WIDTH, **options)


def random_clips(batch: int = 2, frames: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=generator) * 2.0


def calibrate_batch_norm(model: nn.Module, clips: torch.Tensor) -> nn.Module:
    """Set BN running statistics from ``clips`` and switch to eval mode.

    At initialisation the running statistics (mean 0, variance 1) let the
    activity die out by stage 3; statistics of real activations keep every
    stage firing.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one pass sets the statistics
    model.train()
    with torch.no_grad():
        model(clips)
    return model.eval()


def neuron_types(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, SpikingNeuron)}


@pytest.mark.parametrize(
    ("variant", "stateful_stages"),
    [
        ("vanilla", (1, 2, 3, 4)),
        ("ns2", (3, 4)),
        ("rns1", (1, 2, 3)),
        ("ns4", ()),
        ("rns3", (1,)),
    ],
)
def test_stage_neuron_types_follow_variant(variant, stateful_stages):
    model = make_model(variant)

    for index, stage in enumerate(model.stages, start=1):
        expected = LIF if index in stateful_stages else NonStatefulNeuron
        assert neuron_types(stage) == {expected}, f"stage {index}"
    stem_expected = LIF if 1 in stateful_stages else NonStatefulNeuron
    assert neuron_types(model.stem) == {stem_expected}


@pytest.mark.parametrize("temporal_state", [True, False], ids=["state", "nostate"])
def test_stsep_stages_use_stsep_blocks(temporal_state):
    suffix = "state" if temporal_state else "nostate"
    model = make_model(f"stsep-s34-{suffix}")
    temporal_neuron = LIF if temporal_state else NonStatefulNeuron

    for index in (1, 2):
        assert not any(isinstance(m, STSepBlock) for m in model.stages[index - 1].modules())
        assert neuron_types(model.stages[index - 1]) == {LIF}
    for index in (3, 4):
        blocks = list(model.stages[index - 1])
        assert all(isinstance(block, STSepBlock) for block in blocks)
        for block in blocks:
            assert neuron_types(block.spatial) == {NonStatefulNeuron}
            assert neuron_types(block.temporal) == {temporal_neuron}
    assert neuron_types(model.stem) == {LIF}


def test_stsep_stage_one_makes_stem_non_stateful():
    model = make_model("stsep-s1234-state")

    assert neuron_types(model.stem) == {NonStatefulNeuron}


@pytest.mark.parametrize("variant", VARIANT_KINDS)
def test_output_shapes_and_feature_path(variant):
    model = make_model(variant)
    clips = random_clips(batch=3, frames=5)

    logits = model(clips)
    features = model.forward_features(clips)
    head = model.forward_head(features)

    assert logits.shape == (3, 4)
    assert features.shape == (5, 3, 64)
    torch.testing.assert_close(head, logits)
    assert model.variant.name == variant
    assert len(model.stages) == 4


def test_depth_34_and_width_multiplier():
    model = build_model("ns1", num_classes=7, depth=34, width=0.0625)

    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]
    assert model.num_features == 32
    assert model(random_clips(batch=1, frames=2)).shape == (1, 7)


@pytest.mark.parametrize("variant", VARIANT_KINDS)
def test_no_state_leak_between_batches(variant):
    clips = random_clips(seed=1)
    model = calibrate_batch_norm(make_model(variant), clips)

    with torch.no_grad():
        first = model(clips)
        model(random_clips(seed=2) * 3.0)
        again = model(clips)

    assert torch.equal(first, again)


def test_fully_non_stateful_model_ignores_frame_order():
    clips = random_clips(frames=6, seed=3)
    model = calibrate_batch_norm(make_model("ns4"), clips)
    order = torch.tensor([3, 0, 5, 1, 4, 2])

    with torch.no_grad(), record_firing_rates(model) as recorder:
        logits = model(clips)
        shuffled = model(clips[:, order])

    assert min(recorder.rates().values()) > 0.01
    torch.testing.assert_close(shuffled, logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "variant", ["vanilla", "rns1", "ns3", "stsep-s34-state", "stsep-s34-nostate", "stsep-s1234-nostate"]
)
def test_temporal_models_depend_on_frame_order(variant):
    clips = random_clips(frames=6, seed=3)
    model = calibrate_batch_norm(make_model(variant), clips)
    order = torch.tensor([3, 0, 5, 1, 4, 2])

    with torch.no_grad(), record_firing_rates(model) as recorder:
        logits = model(clips)
        shuffled = model(clips[:, order])

    assert min(recorder.rates().values()) > 0.01
    assert (shuffled - logits).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["vanilla", "ns4", "rns2", "stsep-s34-state"])
def test_training_steps_lower_loss(variant):
    torch.manual_seed(0)
    model = build_model(variant, num_classes=4, width=0.25)
    clips = random_clips(batch=4, frames=4, seed=4)
    labels = torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()

    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = loss_fn(model(clips), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    # Spikes flip between steps, so single losses jump (STSep most); the
    # best of the last three steps must still be well below the start.
    assert min(losses[-3:]) < 0.7 * losses[0], losses


@pytest.mark.parametrize(
    ("variant", "options"),
    [
        ("vanilla", {}),
        ("ns2", {"surrogate": "sigmoid", "learnable_tau": True}),
        ("stsep-s34-state", {"learnable_lam": True}),
        ("stsep-s1234-nostate", {"fusion": "gate", "learnable_lam": True, "soft_reset": True}),
        ("stsep-s2-state", {"ds": 1, "dc": 2, "detach_reset": False}),
    ],
)
def test_every_parameter_gets_finite_gradient(variant, options):
    model = make_model(variant, **options)
    clips = random_clips(seed=5)

    model(clips).logsumexp(dim=1).sum().backward()

    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert torch.isfinite(model(clips)).all()


def test_learnable_lam_is_parameter_and_fixed_lam_is_buffer():
    learnable = make_model("stsep-s4-state", learnable_lam=True, lam=0.25)
    fixed = make_model("stsep-s4-state", lam=0.25)

    block = learnable.stages[3][0]
    assert isinstance(block.lam, nn.Parameter)
    assert block.lam.item() == 0.25
    assert "stages.3.0.lam" in dict(fixed.named_buffers())
    assert "stages.3.0.lam" not in dict(fixed.named_parameters())


def test_fusion_gate_and_add_differ():
    clips = random_clips(seed=6)
    add = calibrate_batch_norm(make_model("stsep-s34-state", fusion="add"), clips)
    gate = calibrate_batch_norm(make_model("stsep-s34-state", fusion="gate"), clips)

    with torch.no_grad():
        assert not torch.equal(add(clips), gate(clips))


def test_unknown_option_rejected_with_valid_list():
    with pytest.raises(TypeError, match=r"'dropout'.*valid options: tau, .*fusion, in_channels"):
        build_model("vanilla", num_classes=4, width=WIDTH, dropout=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 50}, "depth"),
        ({"width": 0}, "width"),
        ({"num_classes": 0}, "num_classes"),
        ({"fusion": "concat"}, "fusion"),
        ({"surrogate": "relu"}, "surrogate"),
        ({"ds": 0}, "ds"),
        ({"tau": 0.5}, "tau"),
    ],
)
def test_invalid_build_arguments_rejected(kwargs, match):
    arguments = {"num_classes": 4, "width": WIDTH, **kwargs}

    with pytest.raises(ValueError, match=match):
        build_model("vanilla", **arguments)


def test_wrong_input_layout_rejected():
    model = make_model("vanilla")

    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\].*\(2, 4, 3, 32\)"):
        model(torch.zeros(2, 4, 3, 32))
    with pytest.raises(ValueError, match=r"got 4 channels"):
        model(torch.zeros(2, 3, 4, 32, 32))
    with pytest.raises(TypeError, match="uint8"):
        model(torch.zeros(2, 4, 3, 32, 32, dtype=torch.uint8))


def test_in_channels_option():
    model = make_model("ns1", in_channels=2)

    assert model(torch.randn(1, 3, 2, 32, 32)).shape == (1, 4)


def test_firing_rate_recording_and_hook_removal():
    model = make_model("stsep-s34-state")
    clips = random_clips(seed=7)

    with record_firing_rates(model) as recorder:
        model(clips)
        model(clips)
    rates = recorder.rates()

    assert set(rates) == {"stem", "stage1", "stage2", "stage3", "stage4"}
    assert all(0.0 <= rate <= 1.0 for rate in rates.values())
    assert rates["stem"] > 0.0
    assert all(not m._forward_hooks for m in model.modules())


def test_firing_rate_equals_mean_spike_count():
    model = make_model("ns4")
    clips = random_clips(seed=8)
    stem_spikes = []
    handle = model.stem.neuron.register_forward_hook(lambda m, i, o: stem_spikes.append(o))

    with torch.no_grad(), record_firing_rates(model) as recorder:
        model(clips)
    handle.remove()

    assert recorder.rates()["stem"] == pytest.approx(stem_spikes[0].mean().item())


def test_stage_outputs_recorded_with_temporal_branches():
    model = make_model("stsep-s34-state")
    clips = random_clips(batch=2, frames=3)

    with record_stage_outputs(model, stages=(2, 4), temporal=True) as recorder:
        model(clips)

    outputs = recorder.outputs
    assert set(outputs) == {"stage2", "stage4", "stage4.block0.temporal", "stage4.block1.temporal"}
    assert outputs["stage2"].shape == (3, 2, 16, 4, 4)
    assert outputs["stage4"].shape == (3, 2, 64, 1, 1)
    assert outputs["stage4.block0.temporal"].shape == (3, 2, 64, 1, 1)
    assert all(not m._forward_hooks for m in model.modules())


def test_stage_outputs_reject_invalid_stage():
    with pytest.raises(ValueError, match="1..4"):
        with record_stage_outputs(make_model("vanilla"), stages=(0,)):
            pass


def test_operation_counts_hand_computed():
    # width 0.125: stem 3 -> 8 channels, 7x7, stride 2: 32x32 -> 16x16, max-pool -> 8x8.
    model = make_model("vanilla")
    rates = {"stem": 0.25, "stage1": 0.5}

    ops = count_operations(model, num_frames=4, height=32, width=32, firing_rates=rates)
    layers = {layer["name"]: layer for layer in ops["layers"]}

    stem = layers["stem.conv_bn.module.0"]
    # MACs = T * C_out * H_out * W_out * C_in * k * k = 4 * 8 * 16 * 16 * 3 * 49
    assert stem["macs"] == 4 * 8 * 16 * 16 * 3 * 49 == 1_204_224
    assert stem["kind"] == "mac"
    first = layers["stages.0.0.conv_bn1.module.0"]
    # 4 * 8 * 8 * 8 * (8 * 9) MACs, fed by stem spikes at rate 0.25.
    assert first["macs"] == 147_456
    assert first["ops"] == pytest.approx(36_864)
    second = layers["stages.0.0.conv_bn2.module.0"]
    assert second["ops"] == pytest.approx(147_456 * 0.5)
    assert layers["stages.1.0.conv_bn2.module.0"]["rate"] == DEFAULT_FIRING_RATE
    assert layers["fc"]["macs"] == 4 * 4 * 64
    assert ops["params"] == sum(p.numel() for p in model.parameters())
    assert ops["macs"] == pytest.approx(1_204_224 + 4 * 4 * 64)


def test_operation_counting_restores_training_mode():
    model = make_model("ns1")
    running_mean = model.stem.conv_bn.module[1].running_mean.clone()

    count_operations(model, num_frames=2, height=32, width=32)

    assert model.training
    assert torch.equal(model.stem.conv_bn.module[1].running_mean, running_mean)


def test_energy_estimate_in_millijoules():
    # 1e9 MACs at 4.6 pJ + 1e9 ACs at 0.9 pJ = 5.5e9 pJ = 5.5 mJ.
    energy = estimate_energy_mj({"macs": 1e9, "sops": 1e9})

    assert energy == pytest.approx(5.5)
    assert estimate_energy_mj({"macs": 0, "sops": 2e9}, e_ac_pj=0.5) == pytest.approx(1.0)


@pytest.mark.parametrize("variant", ["vanilla", "stsep-s34-state"])
def test_model_runs_on_input_device(variant):
    # The meta device rejects any mix with CPU tensors, as CUDA would.
    model = make_model(variant).to("meta")

    logits = model(torch.empty(2, 4, 3, 32, 32, device="meta"))

    assert logits.device.type == "meta"
    assert logits.shape == (2, 4)
