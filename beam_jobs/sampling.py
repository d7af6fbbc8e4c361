"""Deterministic, popularity-weighted negative sampling."""

from __future__ import annotations

import hashlib
from typing import Collection, List, Sequence

import numpy as np


def stable_hash(*parts) -> int:
  """A 64-bit hash that is the same in every process (unlike `hash`)."""
  digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"),
                           digest_size=8).digest()
  return int.from_bytes(digest, "little")


def user_rng(seed: int, user: str, purpose: str) -> np.random.Generator:
  """An RNG that depends only on (seed, user, purpose): the same on any runner,
  worker count or sharding, since each user's samples are made in one call."""
  return np.random.default_rng([seed, stable_hash(user, purpose)])


class NegativeSampler:
  """Draws item indices with probability proportional to count ** power.

  power = 0 is uniform, 1 is proportional to popularity (0.75 as in word2vec is
  a common compromise). Items in `exclude` (the user's own items) are never
  returned.

  Args:
    items: candidate item indices.
    counts: their counts in the data.
    power: popularity exponent.
  """

  def __init__(self, items: Sequence[int], counts: Sequence[float],
               power: float = 0.0):
    self.items = np.asarray(items, np.int64)
    if self.items.size == 0:
      raise ValueError("cannot sample negatives from an empty item vocabulary")
    weights = np.power(np.maximum(np.asarray(counts, np.float64), 1e-12), power)
    self._cumulative = np.cumsum(weights / weights.sum())
    self._cumulative[-1] = 1.0

  def sample(self, rng: np.random.Generator, exclude: Collection[int],
             size: int) -> List[int]:
    """`size` draws (with replacement) of items not in `exclude`."""
    if len(exclude) >= self.items.size and set(self.items) <= set(exclude):
      raise ValueError("every item of the vocabulary is in the user's history")
    out = []
    while len(out) < size:
      draws = self.items[np.searchsorted(self._cumulative,
                                         rng.uniform(size=2 * size + 4))]
      out.extend(int(d) for d in draws if int(d) not in exclude)
    return out[:size]
