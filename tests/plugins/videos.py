"""Video fixtures written with PyAV for the data tests."""
