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
    self.check(exclude)
    out = []
    while len(out) < size:
      draws = self.items[np.searchsorted(self._cumulative,
                                         rng.uniform(size=2 * size + 4))]
      out.extend(int(d) for d in draws if int(d) not in exclude)
    return out[:size]

  def check(self, exclude: Collection[int]) -> None:
    """Raises ValueError (as `sample` does) if every item is in `exclude`."""
    if len(exclude) >= self.items.size and set(self.items) <= set(exclude):
      raise ValueError("every item of the vocabulary is in the user's history")

  def sample_calls(self, rng: np.random.Generator, exclude: Collection[int],
                   size: int, calls: int) -> List[List[int]]:
    """`[self.sample(rng, exclude, size) for _ in range(calls)]`, vectorised.

    The draws are the same numbers from the same stream (a call takes the
    next `2 * size + 4` uniforms of `rng`, and again while it has fewer than
    `size` allowed items), so the result is identical to the loop; `rng` may
    be advanced further than the loop would, so do not reuse it.

    Args:
      rng: the generator.
      exclude: item indices never returned.
      size: draws per call.
      calls: number of calls.
    """
    if calls <= 0:
      return []
    self.check(exclude)
    if size <= 0:
      return [[] for _ in range(calls)]
    chunk = 2 * size + 4
    banned = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)

    def draw(n_chunks):
      draws = self.items[np.searchsorted(self._cumulative,
                                         rng.uniform(size=n_chunks * chunk))
                        ].tolist()
      # A set lookup per draw: cheaper than np.isin for the few hundred draws
      # of a typical user.
      return draws, [d not in banned for d in draws]

    values, allowed = draw(calls)
    out = []
    pos = 0
    for remaining in range(calls, 0, -1):
      got: List[int] = []
      while len(got) < size:
        if pos + chunk > len(values):
          more_values, more_allowed = draw(remaining)
          values += more_values
          allowed += more_allowed
        got += [v for v, ok in zip(values[pos:pos + chunk],
                                   allowed[pos:pos + chunk]) if ok]
        pos += chunk
      out.append(got[:size])
    return out
