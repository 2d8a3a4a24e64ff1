"""STSep block: a stateless spatial branch beside an explicit temporal branch.

From Dong, Yu, Ding, Xu, Huang 2025, "Unleashing Temporal Capacity of Spiking
Neural Networks through Spatiotemporal Separation". Over the same input spikes
``X`` (``[T, B, C_in, H, W]``) the block computes::

    spatial  = NSN(BN(conv3x3(NSN(BN(conv3x3_stride(X))))))
    D[t]     = X[t] - X[t-1],  D[0] = 0
    temporal = BN(conv1x1(resize(N(BN(conv3x3(N(BN(conv1x1(avgpool_ds(D))))))))))
    Y        = spatial + lambda * temporal                     (fusion "add")
    Y        = spatial * (1 + lambda * sigmoid(temporal))      (fusion "gate")
    out      = Y + shortcut(X)

``N`` is LIF in the ``state`` variant and NSN in the ``nostate`` variant. The
temporal branch works at ``C_out // dc`` channels and ``1 / ds`` of the input
resolution; ``resize`` brings it to the spatial branch's output resolution.
The paper fixes the branch structure, the difference, the DS/DC scaling and
the balance; the layer sizes and ``ds = 2``, ``dc = 4``, ``lambda = 0.5`` are
this project's choices.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from stsep.models.layers import NeuronSettings, STSepSettings, TimeFolded, conv_bn

__all__ = ["STSepBlock", "SpatialBranch", "TemporalBranch", "temporal_difference"]

logger = logging.getLogger(__name__)


def temporal_difference(x: torch.Tensor) -> torch.Tensor:
    """Return ``D[t] = X[t] - X[t-1]`` with ``D[0] = 0`` for input ``[T, B, ...]``."""
    return torch.cat([torch.zeros_like(x[:1]), x[1:] - x[:-1]], dim=0)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` to ``size``: nearest upsampling, or average pooling to shrink."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] <= size[0] and x.shape[-1] <= size[1]:
        return F.interpolate(x, size=size, mode="nearest")
    return F.adaptive_avg_pool2d(x, size)


class SpatialBranch(nn.Module):
    """conv3x3-BN-NSN-conv3x3-BN-NSN on ``[T, B, C, H, W]``, stateless and per frame."""

    def __init__(
        self, in_channels: int, channels: int, *, stride: int, neurons: NeuronSettings
    ) -> None:
        super().__init__()
        self.conv_bn1 = conv_bn(in_channels, channels, kernel_size=3, stride=stride)
        self.neuron1 = neurons.make(stateful=False)
        self.conv_bn2 = conv_bn(channels, channels, kernel_size=3)
        self.neuron2 = neurons.make(stateful=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.neuron1(self.conv_bn1(x))
        return self.neuron2(self.conv_bn2(out))


class TemporalBranch(nn.Module):
    """Explicit temporal branch on the frame difference of ``[T, B, C_in, H, W]``.

    Args:
        in_channels: channels of the block input.
        channels: channels of the block output.
        neurons: neuron settings.
        stateful: LIF (True, ``state`` variant) or NSN (False, ``nostate``).
        ds: average-pooling factor before the branch's convolutions.
        dc: channel reduction; the branch works at ``max(1, channels // dc)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        neurons: NeuronSettings,
        stateful: bool,
        ds: int,
        dc: int,
    ) -> None:
        super().__init__()
        hidden = max(1, channels // dc)
        self.ds = ds
        self.reduce = conv_bn(in_channels, hidden, kernel_size=1)
        self.neuron1 = neurons.make(stateful=stateful)
        self.conv_bn = conv_bn(hidden, hidden, kernel_size=3)
        self.neuron2 = neurons.make(stateful=stateful)
        self.expand = conv_bn(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, *, output_size: tuple[int, int]) -> torch.Tensor:
        """Return the branch output ``[T, B, channels, *output_size]`` (after BN, not spikes)."""
        num_steps, batch = x.shape[:2]
        diff = temporal_difference(x)

        # DS: average pooling per frame.
        if self.ds > 1:
            pooled = F.avg_pool2d(
                diff.flatten(0, 1), kernel_size=self.ds, stride=self.ds, ceil_mode=True
            )  # [T, B, C, H, W] -> [T * B, C, H / ds, W / ds]
            diff = pooled.unflatten(0, (num_steps, batch))  # -> [T, B, C, H / ds, W / ds]

        # DC: 1x1 convolution to channels // dc, then the spiking convolution.
        out = self.neuron1(self.reduce(diff))
        out = self.neuron2(self.conv_bn(out))

        # Back to the block's resolution and width.
        resized = _resize(out.flatten(0, 1), output_size)  # [T, B, ...] -> [T * B, ...]
        return self.expand(resized.unflatten(0, (num_steps, batch)))  # -> [T, B, ...]


class STSepBlock(nn.Module):
    """STSep residual block from input ``[T, B, C_in, H, W]`` to ``[T, B, C_out, H', W']``.

    The temporal branch is the submodule ``temporal``, so forward hooks can
    capture its output for activation maps. The shortcut (when the shape
    changes: conv1x1-BN-NSN) is stateless like the spatial branch.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        stride: int,
        neurons: NeuronSettings,
        settings: STSepSettings,
        temporal_state: bool,
    ) -> None:
        super().__init__()
        self.spatial = SpatialBranch(in_channels, channels, stride=stride, neurons=neurons)
        self.temporal = TemporalBranch(
            in_channels,
            channels,
            neurons=neurons,
            stateful=temporal_state,
            ds=settings.ds,
            dc=settings.dc,
        )
        if stride != 1 or in_channels != channels:
            self.downsample: nn.Module | None = conv_bn(
                in_channels, channels, kernel_size=1, stride=stride
            )
            self.downsample_neuron: nn.Module | None = neurons.make(stateful=False)
        else:
            self.downsample = None
            self.downsample_neuron = None
        self.fusion = settings.fusion
        lam = torch.tensor(float(settings.lam))
        if settings.learnable_lam:
            self.lam = nn.Parameter(lam)
        else:
            self.register_buffer("lam", lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial(x)
        temporal = self.temporal(x, output_size=tuple(spatial.shape[-2:]))

        if self.fusion == "add":
            fused = spatial + self.lam * temporal
        else:
            fused = spatial * (1.0 + self.lam * torch.sigmoid(temporal))

        if self.downsample is not None:
            shortcut = self.downsample_neuron(self.downsample(x))
        else:
            shortcut = x
        return fused + shortcut

    def extra_repr(self) -> str:
        return f"fusion={self.fusion}"
