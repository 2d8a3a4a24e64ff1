"""Model variant names and their per-stage neuron configuration.

One string names each model variant; the same string is a Tune grid value, an
MLflow run name and a command-line argument. The variants are those of Dong,
Yu, Ding, Xu, Huang 2025, "Unleashing Temporal Capacity of Spiking Neural
Networks through Spatiotemporal Separation":

- ``vanilla``: every stage stateful (LIF).
- ``ns<k>``, k = 0..4: stages 1..k non-stateful (NSN), removal from the
  shallow end. ``ns0`` is ``vanilla`` and ``ns4`` is fully non-stateful.
- ``rns<k>``, k = 0..4: the last k stages non-stateful, removal from the deep
  end. ``rns0`` is ``vanilla`` and ``rns4`` equals ``ns4``.
- ``stsep-s<digits>-state`` / ``stsep-s<digits>-nostate``: the stages named by
  the digits (a strictly increasing subset of 1234) use STSep blocks, whose
  temporal branch has LIF (``state``) or NSN (``nostate``) neurons. The other
  stages stay stateful (LIF).

The stem (7x7 convolution, BN, neuron, max-pool) belongs to stage 1: its neuron
is stateful exactly when stage 1's plain blocks are.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_VARIANTS",
    "STSEP_DEPTH",
    "VALID_FORMS",
    "VariantSpec",
    "parse_variant",
]

logger = logging.getLogger(__name__)

NUM_STAGES: Final[int] = 4

# ns_depth and rns_depth of STSep variants, which remove no stage's state.
STSEP_DEPTH: Final[int] = -1

DEFAULT_VARIANTS: Final[tuple[str, ...]] = (
    "vanilla",
    "ns1",
    "ns2",
    "ns3",
    "ns4",
    "rns1",
    "rns2",
    "rns3",
    "stsep-s34-state",
    "stsep-s34-nostate",
)

VALID_FORMS: Final[str] = (
    "'vanilla'; 'ns<k>' or 'rns<k>' with k in 0..4 (e.g. 'ns2', 'rns1'); "
    "'stsep-s<stages>-state' or 'stsep-s<stages>-nostate' where <stages> are "
    "distinct digits from 1234 in increasing order (e.g. 'stsep-s34-state', "
    "'stsep-s1234-nostate')"
)

_NS_PATTERN = re.compile(r"(r?ns)([0-4])")
_STSEP_PATTERN = re.compile(r"stsep-s([1-4]+)-(state|nostate)")


@dataclass(frozen=True)
class VariantSpec:
    """Per-stage neuron configuration of one model variant.

    Attributes:
        name: the variant name as given (``ns0`` stays ``ns0``).
        stage_stateful: for stages 1..4, whether the neurons of its plain
            blocks (and, for stage 1, the stem) are LIF. STSep stages have
            False here: their spatial branch and shortcut use NSN, and
            ``temporal_state`` sets the temporal branch's neuron.
        stsep_stages: the stages built from STSep blocks, sorted (empty for
            plain variants).
        temporal_state: whether STSep temporal branches use LIF (True) or NSN
            (False); None for variants without STSep stages.
        ns_depth: k of ``ns<k>`` (0 for ``vanilla``, ``rns0`` and ``ns0``); for
            ``rns<k>`` with 0 < k < 4 it is 0, for ``rns4`` 4 (the same model
            as ``ns4``); :data:`STSEP_DEPTH` (-1) for STSep variants.
        rns_depth: k of ``rns<k>``, with the same conventions mirrored.
    """

    name: str
    stage_stateful: tuple[bool, bool, bool, bool]
    stsep_stages: tuple[int, ...] = ()
    temporal_state: bool | None = None
    ns_depth: int = 0
    rns_depth: int = 0

    @property
    def stem_stateful(self) -> bool:
        """Whether the stem neuron is LIF, which follows stage 1."""
        return self.stage_stateful[0]

    @property
    def is_stsep(self) -> bool:
        """Whether any stage uses STSep blocks."""
        return bool(self.stsep_stages)

    @property
    def num_nonstateful_stages(self) -> int:
        """Number of plain stages whose neurons are NSN."""
        return sum(
            1
            for index, stateful in enumerate(self.stage_stateful, start=1)
            if not stateful and index not in self.stsep_stages
        )

    @property
    def stage_map(self) -> str:
        """One letter per stage 1..4: ``S`` stateful, ``N`` non-stateful, ``T`` STSep."""
        letters = []
        for index, stateful in enumerate(self.stage_stateful, start=1):
            if index in self.stsep_stages:
                letters.append("T")
            else:
                letters.append("S" if stateful else "N")
        return "".join(letters)

    def to_params(self) -> dict[str, str | int]:
        """Return flat values for MLflow parameters.

        Keys: ``variant``, ``ns_depth``, ``rns_depth``, ``temporal_state``
        (``"state"``, ``"nostate"`` or ``"none"``), ``stsep_stages`` (digits,
        e.g. ``"34"``, or ``"none"``) and ``stage_map`` (e.g. ``"NNSS"``).
        """
        if self.temporal_state is None:
            temporal = "none"
        else:
            temporal = "state" if self.temporal_state else "nostate"
        return {
            "variant": self.name,
            "ns_depth": self.ns_depth,
            "rns_depth": self.rns_depth,
            "temporal_state": temporal,
            "stsep_stages": "".join(str(stage) for stage in self.stsep_stages) or "none",
            "stage_map": self.stage_map,
        }


def _invalid(name: object, reason: str) -> ValueError:
    return ValueError(f"invalid variant name {name!r}: {reason}. Valid forms: {VALID_FORMS}")


def parse_variant(name: str) -> VariantSpec:
    """Parse a variant name into its per-stage configuration.

    Args:
        name: ``vanilla``, ``ns<k>``, ``rns<k>`` or ``stsep-s<stages>-{state,nostate}``.

    Returns:
        The :class:`VariantSpec` of that variant.

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: if ``name`` is malformed; the message lists the valid forms.
    """
    if not isinstance(name, str):
        raise TypeError(f"variant name must be a string, got {type(name).__name__}: {name!r}")

    if name == "vanilla":
        return VariantSpec(name=name, stage_stateful=(True,) * NUM_STAGES)

    match = _NS_PATTERN.fullmatch(name)
    if match:
        kind, depth = match.group(1), int(match.group(2))
        if kind == "ns":
            stateful = tuple(index >= depth for index in range(NUM_STAGES))
        else:
            stateful = tuple(index < NUM_STAGES - depth for index in range(NUM_STAGES))
        # Both removal directions meet at the fully non-stateful model, which
        # therefore counts as depth 4 from either end.
        other_depth = NUM_STAGES if depth == NUM_STAGES else 0
        ns_depth = depth if kind == "ns" else other_depth
        rns_depth = depth if kind == "rns" else other_depth
        return VariantSpec(
            name=name,
            stage_stateful=stateful,  # type: ignore[arg-type]
            ns_depth=ns_depth,
            rns_depth=rns_depth,
        )

    match = _STSEP_PATTERN.fullmatch(name)
    if match:
        digits, temporal = match.group(1), match.group(2)
        stages = tuple(int(digit) for digit in digits)
        if any(later <= earlier for earlier, later in zip(stages, stages[1:])):
            raise _invalid(name, f"STSep stages {digits!r} must be strictly increasing")
        return VariantSpec(
            name=name,
            stage_stateful=tuple(index not in stages for index in range(1, NUM_STAGES + 1)),  # type: ignore[arg-type]
            stsep_stages=stages,
            temporal_state=temporal == "state",
            ns_depth=STSEP_DEPTH,
            rns_depth=STSEP_DEPTH,
        )

    if name.startswith("stsep"):
        reason = "STSep names need stage digits from 1234 and a '-state' or '-nostate' suffix"
    elif name.startswith(("ns", "rns")):
        reason = "the number of non-stateful stages must be a single digit 0..4"
    else:
        reason = "unknown variant"
    raise _invalid(name, reason)
