"""Quantization and export of float models to integer model files (PyTorch only here)."""
