"""Independent NumPy implementations of the equations, for the tests."""

import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def dice(s, alpha, mean, var, eps=1e-8):
  p = sigmoid((s - mean) / np.sqrt(var + eps))
  return p * s + (1 - p) * alpha * s


def prelu(x, alpha):
  return np.where(x > 0, x, alpha * x)


def gru_step(x, a, h, kernel, rec_kernel, bias, rec_bias, gate):
  """One step of the GRU of tfrs_din/layers/gru_equations.py.

  gate in {'none', 'AGRU', 'AUGRU', 'AUGRU_OFFICIAL'}; kernels [D, 3H] / [H, 3H] with columns
  [update, reset, candidate].
  """
  units = h.shape[-1]
  xw = x @ kernel + bias
  hu = h @ rec_kernel + rec_bias
  u = sigmoid(xw[:, :units] + hu[:, :units])
  r = sigmoid(xw[:, units:2 * units] + hu[:, units:2 * units])
  cand = np.tanh(xw[:, 2 * units:] + r * hu[:, 2 * units:])
  if gate == "AGRU":
    u = a[:, None]
  elif gate == "AUGRU":
    u = a[:, None] * u
  elif gate == "AUGRU_OFFICIAL":   # attention scales the keep gate 1 - u
    u = 1 - (1 - a[:, None]) * (1 - u)
  return (1 - u) * h + u * cand


def auc(labels, scores):
  """Brute force: fraction of (positive, negative) pairs ranked right, ties 1/2."""
  labels = np.asarray(labels)
  scores = np.asarray(scores, dtype=np.float64)
  pos, neg = scores[labels == 1], scores[labels == 0]
  diff = pos[:, None] - neg[None, :]
  return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def gauc(users, labels, scores):
  users, labels, scores = map(np.asarray, (users, labels, scores))
  num, den = 0.0, 0.0
  for u in np.unique(users):
    sel = users == u
    if labels[sel].min() == labels[sel].max():
      continue
    num += sel.sum() * auc(labels[sel], scores[sel])
    den += sel.sum()
  return num / den
