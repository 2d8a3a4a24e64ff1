"""Firing rates, synaptic operations and energy of a trained model, as MLflow metrics.

Firing rates are measured while the model runs on the evaluation clips
(`stsep.profile.record_firing_rates`). Operation counts for one clip come from
`stsep.profile.count_operations` with those rates, and the energy estimate
from `stsep.profile.estimate_energy` (MACs at `e_mac_pj`, accumulates at
`e_ac_pj`, 45 nm figures by default). The counts and the energy are estimates
for one clip of `num_frames` frames at the evaluation crop size.

Metric names: `sops`, `macs`, `dense_macs` (operations per clip), `energy_mj`
(millijoules per clip), `num_params`, and `eval_firing_rate_<group>` and
`eval_firing_rate_mean` for the rates measured in evaluation. The `eval_`
prefix keeps them apart from the per-epoch `firing_rate_<group>` metrics that
training logs on validation clips.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

__all__ = ["EnergyProfile", "profile_energy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnergyProfile:
    """Operation counts and the energy estimate of one clip.

    Attributes:
        firing_rates: measured mean firing rate per group (stem, stage1..stage4).
        num_params: model parameters.
        macs: multiply-accumulates of layers with analog input, per clip.
        sops: synaptic operations (accumulates) of layers with spike input, per clip.
        dense_macs: MACs of every layer as if it were a dense ANN layer, per clip.
        energy_mj: estimated energy per clip in millijoules.
        num_frames: time steps T of the clip.
        height: frame height in pixels.
        width: frame width in pixels.
    """

    firing_rates: dict[str, float]
    num_params: int
    macs: float
    sops: float
    dense_macs: float
    energy_mj: float
    num_frames: int
    height: int
    width: int

    def metrics(self) -> dict[str, float]:
        """Return the MLflow metrics of this profile (names in the module docstring)."""
        values = {
            "sops": self.sops,
            "macs": self.macs,
            "dense_macs": self.dense_macs,
            "energy_mj": self.energy_mj,
            "num_params": float(self.num_params),
        }
        values.update({f"eval_firing_rate_{group}": rate for group, rate in self.firing_rates.items()})
        if self.firing_rates:
            values["eval_firing_rate_mean"] = sum(self.firing_rates.values()) / len(self.firing_rates)
        return values


def profile_energy(
    model: nn.Module,
    *,
    firing_rates: Mapping[str, float],
    num_frames: int,
    height: int,
    width: int,
    e_mac_pj: float | None = None,
    e_ac_pj: float | None = None,
) -> EnergyProfile:
    """Count one clip's operations with measured firing rates and estimate its energy.

    Args:
        model: a `stsep.models.SpikingResNet`.
        firing_rates: rates per group, from `record_firing_rates(model).rates()`.
        num_frames: time steps T per clip.
        height: frame height in pixels.
        width: frame width in pixels.
        e_mac_pj: energy per MAC in picojoules (default `stsep.profile.E_MAC_PJ`).
        e_ac_pj: energy per accumulate in picojoules (default `stsep.profile.E_AC_PJ`).
    """
    from stsep.profile import E_AC_PJ, E_MAC_PJ, GROUPS, count_operations, estimate_energy

    missing = [group for group in GROUPS if group not in firing_rates]
    if missing:
        # count_operations would fall back to its assumed rate for these groups.
        raise ValueError(
            f"firing rates for {missing} were not measured; run the model on clips inside "
            "record_firing_rates before profiling"
        )
    ops = count_operations(
        model, num_frames=num_frames, height=height, width=width, firing_rates=dict(firing_rates)
    )
    energy = estimate_energy(
        ops,
        e_mac_pj=E_MAC_PJ if e_mac_pj is None else e_mac_pj,
        e_ac_pj=E_AC_PJ if e_ac_pj is None else e_ac_pj,
    )
    profile = EnergyProfile(
        firing_rates={group: float(firing_rates[group]) for group in GROUPS},
        num_params=int(ops["params"]),
        macs=float(ops["macs"]),
        sops=float(ops["sops"]),
        dense_macs=float(ops["dense_macs"]),
        energy_mj=float(energy),
        num_frames=num_frames,
        height=height,
        width=width,
    )
    logger.info(
        "per clip (T=%d, %dx%d): %.3g SOPs, %.3g MACs, %.4g mJ estimated",
        num_frames, height, width, profile.sops, profile.macs, profile.energy_mj,
    )
    return profile
