"""Shared pytest configuration: fixture plugins and test ordering."""

pytest_plugins = ["tests.plugins.servers", "tests.plugins.videos"]


def pytest_collection_modifyitems(config, items):
    """Run the autoscaler tests last, so their fake multi-node cluster has the machine to itself."""
    items.sort(key=lambda item: item.get_closest_marker("autoscaler") is not None)
