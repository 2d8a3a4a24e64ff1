"""Shared pytest configuration: fixture plugins and test ordering."""

pytest_plugins = ["tests.plugins.servers", "tests.plugins.videos"]


def pytest_collection_modifyitems(config, items):
    """Move autoscaler tests to the end: their cluster runs `ray stop --force`."""
    items.sort(key=lambda item: item.get_closest_marker("autoscaler") is not None)
