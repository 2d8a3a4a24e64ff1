"""Spiking ResNet in the SEW form (spike-element-wise ADD residual).

The backbone of Dong, Yu, Ding, Xu, Huang 2025, "Unleashing Temporal Capacity
of Spiking Neural Networks through Spatiotemporal Separation": a stem (7x7
convolution with stride 2, BN, neuron, 3x3 max-pool), four stages of basic
blocks (conv3x3-BN-neuron-conv3x3-BN-neuron, output = block + shortcut), global
average pooling, a linear classifier on each time step and logits averaged
over time steps. Frames enter the stem as analog input (no rate encoding).

Each stage's neurons are LIF or non-stateful as its :class:`VariantSpec`
specifies, and STSep stages use :class:`~stsep.models.stsep_block.STSepBlock`.
Convolutions, BN and pooling run on ``[T * B, C, H, W]``; only LIF neurons
loop over time steps.
"""

from __future__ import annotations

import logging
from typing import Final

import torch
from torch import nn

from stsep.models.layers import NeuronSettings, STSepSettings, TimeFolded, conv_bn
from stsep.models.stsep_block import STSepBlock
from stsep.variants import VariantSpec

__all__ = ["BASE_CHANNELS", "DEPTHS", "BasicBlock", "SpikingResNet", "Stem", "stage_channels"]

logger = logging.getLogger(__name__)

# Blocks per stage for each supported depth.
DEPTHS: Final[dict[int, tuple[int, int, int, int]]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

BASE_CHANNELS: Final[tuple[int, int, int, int]] = (64, 128, 256, 512)


def stage_channels(width: float) -> tuple[int, int, int, int]:
    """Return the channels of stages 1..4 for a width multiplier (at least 1 each)."""
    return tuple(max(1, round(base * width)) for base in BASE_CHANNELS)  # type: ignore[return-value]


class Stem(nn.Module):
    """7x7 convolution (stride 2), BN, neuron, 3x3 max-pool (stride 2).

    Input frames ``[T, B, C, H, W]`` (analog), output spikes
    ``[T, B, C_1, H / 4, W / 4]``.
    """

    def __init__(self, in_channels: int, channels: int, *, neuron: nn.Module) -> None:
        super().__init__()
        self.conv_bn = conv_bn(in_channels, channels, kernel_size=7, stride=2)
        self.neuron = neuron
        self.pool = TimeFolded(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.neuron(self.conv_bn(x)))


class BasicBlock(nn.Module):
    """SEW basic block with ADD connection on ``[T, B, C, H, W]``.

    ``out = N(BN(conv3x3(N(BN(conv3x3(x)))))) + shortcut(x)``, where the
    shortcut is the identity or, when the shape changes, conv1x1-BN-N.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        stride: int,
        neurons: NeuronSettings,
        stateful: bool,
    ) -> None:
        super().__init__()
        self.conv_bn1 = conv_bn(in_channels, channels, kernel_size=3, stride=stride)
        self.neuron1 = neurons.make(stateful=stateful)
        self.conv_bn2 = conv_bn(channels, channels, kernel_size=3)
        self.neuron2 = neurons.make(stateful=stateful)
        if stride != 1 or in_channels != channels:
            self.downsample: nn.Module | None = conv_bn(
                in_channels, channels, kernel_size=1, stride=stride
            )
            self.downsample_neuron: nn.Module | None = neurons.make(stateful=stateful)
        else:
            self.downsample = None
            self.downsample_neuron = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.neuron1(self.conv_bn1(x))
        out = self.neuron2(self.conv_bn2(out))

        if self.downsample is not None:
            shortcut = self.downsample_neuron(self.downsample(x))
        else:
            shortcut = x
        return out + shortcut


class SpikingResNet(nn.Module):
    """SEW-ResNet for clips, built by :func:`stsep.build_model`.

    Args:
        variant: per-stage neuron configuration.
        num_classes: number of output classes.
        blocks: basic blocks per stage.
        channels: channels per stage.
        neurons: neuron settings.
        stsep: STSep block settings (used by STSep stages only).
        in_channels: channels of the input frames.

    Attributes:
        stem: the :class:`Stem`.
        stages: ``nn.ModuleList`` of the four stages (``nn.Sequential`` of blocks).
        variant: the :class:`VariantSpec`.
        num_features: width ``D`` of the pooled features.
    """

    def __init__(
        self,
        *,
        variant: VariantSpec,
        num_classes: int,
        blocks: tuple[int, int, int, int],
        channels: tuple[int, int, int, int],
        neurons: NeuronSettings,
        stsep: STSepSettings,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = channels[-1]

        self.stem = Stem(in_channels, channels[0], neuron=neurons.make(stateful=variant.stem_stateful))

        stages = []
        previous = channels[0]
        for index, (num_blocks, width) in enumerate(zip(blocks, channels), start=1):
            stage_blocks = []
            for block_index in range(num_blocks):
                stride = 2 if index > 1 and block_index == 0 else 1
                stage_blocks.append(
                    self._make_block(index, previous, width, stride, neurons, stsep)
                )
                previous = width
            stages.append(nn.Sequential(*stage_blocks))
        self.stages = nn.ModuleList(stages)

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _make_block(
        self,
        stage: int,
        in_channels: int,
        channels: int,
        stride: int,
        neurons: NeuronSettings,
        stsep: STSepSettings,
    ) -> nn.Module:
        if stage in self.variant.stsep_stages:
            return STSepBlock(
                in_channels,
                channels,
                stride=stride,
                neurons=neurons,
                settings=stsep,
                temporal_state=bool(self.variant.temporal_state),
            )
        return BasicBlock(
            in_channels,
            channels,
            stride=stride,
            neurons=neurons,
            stateful=self.variant.stage_stateful[stage - 1],
        )

    def _init_weights(self) -> None:
        # The initialisation of torchvision's and SpikingJelly's ResNets.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        expected = f"[B, T, C, H, W] with C = {self.in_channels}"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a tensor {expected}, got {type(x).__name__}")
        if x.dim() != 5:
            raise ValueError(
                f"expected input {expected} (batch, time steps, channels, height, width), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.in_channels:
            raise ValueError(
                f"expected input {expected}, got {x.shape[2]} channels in shape "
                f"{tuple(x.shape)}. Is the clip laid out as [B, C, T, H, W] or [B, T, H, W, C]?"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"expected a floating-point input {expected}, got {x.dtype}. "
                "Convert uint8 clips to float and normalize them first"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return pooled last-stage features ``[T, B, D]`` of clips ``[B, T, C, H, W]``."""
        self._check_input(x)
        out = x.transpose(0, 1).contiguous()  # [B, T, C, H, W] -> [T, B, C, H, W]
        out = self.stem(out)
        for stage in self.stages:
            out = stage(out)
        num_steps, batch = out.shape[:2]
        pooled = self.pool(out.flatten(0, 1))  # [T, B, D, h, w] -> [T * B, D, 1, 1]
        return pooled.flatten(1).unflatten(0, (num_steps, batch))  # -> [T, B, D]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Return logits ``[B, num_classes]``: the classifier on each time step, averaged."""
        if features.dim() != 3 or features.shape[-1] != self.num_features:
            raise ValueError(
                f"expected features [T, B, {self.num_features}], got shape {tuple(features.shape)}"
            )
        return self.fc(features).mean(dim=0)  # [T, B, K] -> [B, K]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``[B, num_classes]`` of clips ``[B, T, C, H, W]``."""
        return self.forward_head(self.forward_features(x))
