"""Fused operations of the model's layers: the CARVE operator and the kernels around it."""
