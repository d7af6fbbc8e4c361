"""Metrics of the DIN/DIEN papers: GAUC and RelaImpr."""

from tfrs_din.metrics.gauc import GAUC, gauc, grouped_auc
from tfrs_din.metrics.rela_impr import rela_impr

__all__ = ["GAUC", "gauc", "grouped_auc", "rela_impr"]
