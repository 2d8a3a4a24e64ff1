"""``build_model``: a spiking ResNet for a variant name and keyword options."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Final

from stsep.models.layers import NeuronSettings, STSepSettings
from stsep.models.resnet import DEPTHS, SpikingResNet, stage_channels
from stsep.variants import VariantSpec, parse_variant

__all__ = ["MODEL_OPTIONS", "build_model"]

logger = logging.getLogger(__name__)

_NEURON_OPTIONS: Final[tuple[str, ...]] = tuple(
    field.name for field in dataclasses.fields(NeuronSettings)
)
_STSEP_OPTIONS: Final[tuple[str, ...]] = tuple(
    field.name for field in dataclasses.fields(STSepSettings)
)
MODEL_OPTIONS: Final[tuple[str, ...]] = (*_NEURON_OPTIONS, *_STSEP_OPTIONS, "in_channels")


def build_model(
    variant: str | VariantSpec,
    num_classes: int,
    depth: int = 18,
    width: float = 1.0,
    **options: Any,
) -> SpikingResNet:
    """Build the SEW-ResNet of a model variant.

    Args:
        variant: a variant name (see :func:`stsep.variants.parse_variant`) or spec.
        num_classes: number of output classes.
        depth: 18 (blocks ``[2, 2, 2, 2]``) or 34 (``[3, 4, 6, 3]``).
        width: channel multiplier; stage channels are ``64, 128, 256, 512``
            times ``width``, at least 1 (e.g. ``width=0.125`` for tests).
        **options: keyword options, all optional:
            neurons: ``tau`` (2.0), ``v_threshold`` (1.0), ``v_reset`` (0.0),
            ``soft_reset`` (False), ``detach_reset`` (True), ``learnable_tau``
            (False), ``surrogate`` (``"atan"`` or ``"sigmoid"``), ``alpha``
            (None: the surrogate's default);
            STSep blocks: ``ds`` (2), ``dc`` (4), ``lam`` (0.5),
            ``learnable_lam`` (False), ``fusion`` (``"add"`` or ``"gate"``);
            input: ``in_channels`` (3).

    Returns:
        A :class:`SpikingResNet` taking clips ``[B, T, C, H, W]``.

    Raises:
        TypeError: for an unknown option (the message lists the valid ones).
        ValueError: for an invalid variant, depth, width or option value.
    """
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise TypeError(
            f"build_model() got unknown option(s) {', '.join(map(repr, unknown))}. "
            f"valid options: {', '.join(MODEL_OPTIONS)}"
        )
    spec = variant if isinstance(variant, VariantSpec) else parse_variant(variant)

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    in_channels = options.pop("in_channels", 3)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")

    neurons = NeuronSettings(**{name: options[name] for name in _NEURON_OPTIONS if name in options})
    stsep = STSepSettings(**{name: options[name] for name in _STSEP_OPTIONS if name in options})

    model = SpikingResNet(
        variant=spec,
        num_classes=num_classes,
        blocks=DEPTHS[depth],
        channels=stage_channels(width),
        neurons=neurons,
        stsep=stsep,
        in_channels=in_channels,
    )
    logger.debug(
        "built %s: depth %d, width %s, stage map %s", spec.name, depth, width, spec.stage_map
    )
    return model
