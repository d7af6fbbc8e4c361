"""Batches of a dataset as whole NumPy arrays, for the data tests."""

from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf


def concatenated(batches: Iterable[Dict[str, tf.Tensor]],
                 names: Optional[Sequence[str]] = None
                 ) -> Dict[str, np.ndarray]:
  """Each feature of `names` (default: every feature of the first batch)
  over one pass of `batches`, concatenated; sequences (batches padded to
  their own widths) zero-padded to the widest."""
  batches = list(batches)
  out = {}
  for n in batches[0] if names is None else names:
    values = [b[n].numpy() for b in batches]
    if values[0].ndim == 2:
      width = max(v.shape[1] for v in values)
      values = [np.pad(v, [(0, 0), (0, width - v.shape[1])]) for v in values]
    out[n] = np.concatenate(values)
  return out
