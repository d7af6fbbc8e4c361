"""Attention plots: a user's behaviours against a few candidates (DIN Fig. 5)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def plot_attention(weights: np.ndarray, behaviour_labels: Sequence[str],
                   candidate_labels: Sequence[str], path: str,
                   title: str = "Attention of behaviours to candidates") -> str:
  """Writes a heat map of `weights` [candidates, behaviours] to a PNG.

  Args:
    weights: attention weights, one row per candidate.
    behaviour_labels: one label per behaviour (oldest first).
    candidate_labels: one label per candidate.
    path: output PNG path.
    title: figure title.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  weights = np.asarray(weights, dtype=np.float64)
  fig, ax = plt.subplots(figsize=(max(6, 0.45 * weights.shape[1] + 3),
                                  1.0 + 0.6 * weights.shape[0]))
  image = ax.imshow(weights, aspect="auto", cmap="viridis")
  ax.set_xticks(range(len(behaviour_labels)))
  ax.set_xticklabels(behaviour_labels, rotation=90, fontsize=8)
  ax.set_yticks(range(len(candidate_labels)))
  ax.set_yticklabels(candidate_labels, fontsize=9)
  ax.set_xlabel("behaviours (oldest -> most recent)")
  ax.set_title(title)
  fig.colorbar(image, ax=ax, label="weight")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
