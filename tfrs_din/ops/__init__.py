"""Custom TensorFlow ops (C++ CPU kernels, compiled on first use)."""

from tfrs_din.ops.packed_gru import fused_kernels, fused_recurrence

__all__ = ["fused_kernels", "fused_recurrence"]
