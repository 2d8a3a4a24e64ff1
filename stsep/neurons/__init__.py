"""Spiking neurons: multi-step LIF and the non-stateful neuron (NSN).

See :mod:`stsep.neurons.modules` for the equations and
:mod:`stsep.neurons.kernels` for the fused autograd kernels.
"""

from stsep.neurons.modules import LIF, NonStatefulNeuron, SpikingNeuron

__all__ = ["LIF", "NonStatefulNeuron", "SpikingNeuron"]
