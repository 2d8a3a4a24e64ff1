"""Spiking ResNet models: SEW-ResNet backbone, STSep block and ``build_model``."""

from stsep.models.factory import MODEL_OPTIONS, build_model
from stsep.models.layers import NeuronSettings, STSepSettings, TimeFolded
from stsep.models.resnet import BasicBlock, SpikingResNet, Stem
from stsep.models.stsep_block import STSepBlock, SpatialBranch, TemporalBranch

__all__ = [
    "MODEL_OPTIONS",
    "BasicBlock",
    "NeuronSettings",
    "STSepBlock",
    "STSepSettings",
    "SpatialBranch",
    "SpikingResNet",
    "Stem",
    "TemporalBranch",
    "TimeFolded",
    "build_model",
]
