"""RelaImpr: relative improvement over a base model (DIN paper, eq. 11)."""

from __future__ import annotations


def rela_impr(model_auc: float, base_auc: float) -> float:
  """RelaImpr = ((AUC(model) - 0.5) / (AUC(base) - 0.5) - 1) * 100, in percent.

  Example:

  >>> round(rela_impr(0.8818, 0.8624), 2)
  5.35
  """
  if base_auc == 0.5:
    raise ValueError("base_auc must differ from 0.5 (a random base model).")
  return ((model_auc - 0.5) / (base_auc - 0.5) - 1.0) * 100.0
