"""Vocabularies with id frequencies (the n_j of MBA regularisation)."""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Tuple

import numpy as np

from tfrs_din.schema import (FIRST_INDEX, OOV_INDEX, OOV_TOKEN, PADDING_INDEX,
                             PADDING_TOKEN, VOCABULARY_HEADER, vocabulary_path)


@dataclasses.dataclass
class Vocabulary:
  """Ids by decreasing count (ties by id); index = FIRST_INDEX + position.

  Index 0 is padding and 1 is out-of-vocabulary (ids below `min_count` and
  ids never seen). `oov_count` is the number of occurrences mapped to OOV.
  """
  name: str
  ids: List[str]
  counts: List[int]
  oov_count: int = 0

  def __post_init__(self):
    self._index = {value: FIRST_INDEX + i for i, value in enumerate(self.ids)}

  @classmethod
  def from_counts(cls, name: str, counts: Iterable[Tuple[str, int]],
                  min_count: int = 1) -> "Vocabulary":
    ordered = sorted(counts, key=lambda kv: (-kv[1], kv[0]))
    kept = [(k, c) for k, c in ordered if c >= min_count]
    oov = sum(c for _, c in ordered if c < min_count)
    return cls(name, [k for k, _ in kept], [c for _, c in kept], oov)

  @property
  def size(self) -> int:
    return FIRST_INDEX + len(self.ids)

  def index(self, value: str) -> int:
    return self._index.get(value, OOV_INDEX)

  def frequencies(self) -> np.ndarray:
    return np.asarray([0, self.oov_count] + list(self.counts), np.float32)

  def to_tsv(self) -> str:
    lines = ["\t".join(VOCABULARY_HEADER),
             f"{PADDING_INDEX}\t{PADDING_TOKEN}\t0",
             f"{OOV_INDEX}\t{OOV_TOKEN}\t{self.oov_count}"]
    lines += [f"{FIRST_INDEX + i}\t{k}\t{c}"
              for i, (k, c) in enumerate(zip(self.ids, self.counts))]
    return "\n".join(lines) + "\n"

  @classmethod
  def from_tsv(cls, name: str, text: str) -> "Vocabulary":
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    oov = int(rows[OOV_INDEX][2])
    rest = rows[FIRST_INDEX:]
    return cls(name, [r[1] for r in rest], [int(r[2]) for r in rest], oov)


def load_vocabularies(directory: str, names: Iterable[str]
                      ) -> Dict[str, Vocabulary]:
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=g-import-not-at-top
  vocabs = {}
  for name in names:
    with FileSystems.open(vocabulary_path(directory, name)) as handle:
      vocabs[name] = Vocabulary.from_tsv(name, handle.read().decode("utf-8"))
  return vocabs
