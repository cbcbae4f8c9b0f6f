"""Training of the float model (PyTorch). Never imported by the codec path."""
