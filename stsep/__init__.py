"""STSep: spatiotemporal separation for spiking neural networks.

Models, neurons and variant names of Dong, Yu, Ding, Xu, Huang 2025,
"Unleashing Temporal Capacity of Spiking Neural Networks through
Spatiotemporal Separation". ``build_model("stsep-s34-state", num_classes=101)``
returns a SEW-ResNet taking clips ``[B, T, C, H, W]``.
"""

import logging

from stsep.models import SpikingResNet, build_model
from stsep.neurons import LIF, NonStatefulNeuron
from stsep.variants import DEFAULT_VARIANTS, VariantSpec, parse_variant

__all__ = [
    "DEFAULT_VARIANTS",
    "LIF",
    "NonStatefulNeuron",
    "SpikingResNet",
    "VariantSpec",
    "build_model",
    "parse_variant",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
