"""Shared pytest configuration: fixture plugins, the LIF kernel choice and test ordering."""

import pytest

pytest_plugins = ["tests.plugins.servers", "tests.plugins.videos"]


@pytest.fixture(params=["compiled", "eager"])
def lif_kernel(request, monkeypatch):
    """Run a test with the compiled fused LIF (where it builds) and again with the eager kernels."""
    from stsep.neurons import fused

    if request.param == "eager":
        monkeypatch.setattr(fused, "load", lambda: None)
    elif fused.load() is None:
        pytest.skip("the compiled fused LIF kernel could not be built here")
    return request.param


def pytest_collection_modifyitems(config, items):
    """Run the autoscaler tests last, so their fake multi-node cluster has the machine to itself."""
    items.sort(key=lambda item: item.get_closest_marker("autoscaler") is not None)
