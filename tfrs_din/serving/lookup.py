"""Raw ids -> vocabulary indices inside the serving graph.

A prepared data directory (`beam_jobs.prepare`) holds one vocabulary per
categorical feature (`vocab/<feature>.tsv`: index, id, count) and the item
table (`item_table.tsv`: item id and its raw side features). The export turns
them into headerless `key<TAB>index` files:

  <feature>.tsv       every vocabulary id of the feature and its index
  item__<side>.tsv    every item id of the item table and the index of its
                      side feature `<side>` (e.g. its category)

which travel as SavedModel assets (`assets/`) and initialise
`tf.lookup.StaticHashTable`s with `TextFileInitializer` when the model loads.
Text-file assets rather than constants: the tables stay out of the graph
proto (no 2 GB limit for large catalogues, a small `saved_model.pb`) and can
be read with any text tool. A key missing from a table is out-of-vocabulary
(index 1); the empty string is padding (index 0).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List

import tensorflow as tf

from tfrs_din.features import OOV_INDEX, PADDING_INDEX, FeatureSpec

ITEM_TABLE_FILE = "item_table.tsv"
SIDE_PREFIX = "item__"
ID_DTYPES = (tf.string, tf.int64)


@dataclasses.dataclass
class LookupFiles:
  """Paths of the lookup files written by `write_lookup_files`.

  Args:
    vocabularies: feature name -> `<feature>.tsv`.
    item_sides: item side feature name -> `item__<side>.tsv`.
  """
  vocabularies: Dict[str, str]
  item_sides: Dict[str, str]


def _read_text(path: str, what: str) -> str:
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: {what}. Re-run `tfrs-din prepare` with this "
        "version, or export index-based signatures only (data_dir=None, "
        "`tfrs-din export --index_only`).")
  with tf.io.gfile.GFile(path) as handle:
    return handle.read()


def _check_key(feature: str, key: str) -> None:
  if not key or "\t" in key or "\n" in key or "\r" in key:
    raise ValueError(f"feature {feature!r}: id {key!r} cannot be a lookup key "
                     "(empty, or holds a tab or line break)")


def _write_pairs(path: str, pairs: List) -> None:
  with tf.io.gfile.GFile(path, "w") as handle:
    handle.write("".join(f"{k}\t{v}\n" for k, v in pairs))


def write_lookup_files(data_dir: str, spec: FeatureSpec, directory: str
                       ) -> LookupFiles:
  """Writes the serving lookup files of a prepared data directory.

  Args:
    data_dir: output directory of `beam_jobs.prepare` the model was trained on.
    spec: the model's feature spec; its vocabulary sizes must match.
    directory: where to write the files (an existing directory).

  Raises:
    FileNotFoundError: a vocabulary or `item_table.tsv` is missing.
    ValueError: the vocabularies do not match `spec`, or the item table's
      columns are not the spec's item features.
  """
  from beam_jobs.vocabulary import FIRST_INDEX, Vocabulary  # pylint: disable=g-import-not-at-top
  vocabs = {}
  for f in spec.user_features + spec.item_features:
    text = _read_text(os.path.join(data_dir, "vocab", f"{f.name}.tsv"),
                      f"the vocabulary of {f.name!r}")
    vocabs[f.name] = Vocabulary.from_tsv(f.name, text)
    if vocabs[f.name].size != f.vocab_size:
      raise ValueError(
          f"feature {f.name!r}: the vocabulary in {data_dir!r} has "
          f"{vocabs[f.name].size} rows but the model was trained with "
          f"{f.vocab_size}: export with the data directory the model was "
          "trained on")
  files = LookupFiles({}, {})
  for name, vocab in vocabs.items():
    for key in vocab.ids:
      _check_key(name, key)
    path = os.path.join(directory, f"{name}.tsv")
    _write_pairs(path, [(k, FIRST_INDEX + i) for i, k in enumerate(vocab.ids)])
    files.vocabularies[name] = path

  rows = [line.split("\t") for line in _read_text(
      os.path.join(data_dir, ITEM_TABLE_FILE), "the item table").splitlines()
          if line]
  sides = [f.name for f in spec.item_features[1:]]
  if not rows or rows[0] != [spec.item_id] + sides:
    raise ValueError(f"{ITEM_TABLE_FILE} in {data_dir!r} has columns "
                     f"{rows[0] if rows else []}, expected "
                     f"{[spec.item_id] + sides}")
  for j, side in enumerate(sides, start=1):
    pairs = []
    for row in rows[1:]:
      _check_key(spec.item_id, row[0])
      pairs.append((row[0], vocabs[side].index(row[j])))
    path = os.path.join(directory, f"{SIDE_PREFIX}{side}.tsv")
    _write_pairs(path, pairs)
    files.item_sides[side] = path
  return files


class RawIdLookup(tf.Module):
  """In-graph lookups from raw ids to the model's indices.

  Args:
    spec: the model's feature spec.
    files: lookup files from `write_lookup_files`; they become assets.
    id_dtype: dtype of raw ids in requests: `tf.string` (padding "") or
      `tf.int64` (ids are matched by their decimal string; negative ids are
      padding).
  """

  def __init__(self, spec: FeatureSpec, files: LookupFiles,
               id_dtype: tf.DType = tf.string):
    super().__init__(name="raw_id_lookup")
    if id_dtype not in ID_DTYPES:
      raise ValueError(f"id_dtype must be tf.string or tf.int64, got {id_dtype}")
    self._spec = spec
    self.id_dtype = id_dtype
    paths = dict(files.vocabularies)
    paths.update({SIDE_PREFIX + k: v for k, v in files.item_sides.items()})
    self.assets = {k: tf.saved_model.Asset(v) for k, v in paths.items()}
    self.tables = {
        k: tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                asset, tf.string, 0, tf.int64, 1, delimiter="\t"),
            default_value=OOV_INDEX)
        for k, asset in self.assets.items()}

  def as_strings(self, ids: tf.Tensor) -> tf.Tensor:
    """Raw ids as strings; "" marks padding."""
    if self.id_dtype == tf.string:
      return ids
    return tf.where(ids < 0, "", tf.strings.as_string(ids))

  def _index(self, table: str, ids: tf.Tensor) -> tf.Tensor:
    return tf.where(ids == "", tf.constant(PADDING_INDEX, tf.int64),
                    self.tables[table].lookup(ids))

  def feature_index(self, name: str, ids: tf.Tensor) -> tf.Tensor:
    """Indices of a user or item feature's raw values (string ids)."""
    return self._index(name, ids)

  def item_indices(self, item_ids: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Every item feature's indices for raw item ids (string ids).

    The item id goes through its vocabulary, each side feature through the
    item table; an unknown item is OOV for every feature, "" is padding.
    """
    out = {self._spec.item_id: self._index(self._spec.item_id, item_ids)}
    for f in self._spec.item_features[1:]:
      out[f.name] = self._index(SIDE_PREFIX + f.name, item_ids)
    return out
