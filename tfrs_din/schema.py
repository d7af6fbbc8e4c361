"""The data contract between `beam_jobs` (which writes) and `tfrs_din` (which reads).

This module imports nothing beyond the standard library, so Beam workers can
use it without loading TensorFlow's Keras stack.

A prepared directory holds:

  _SUCCESS                  empty; written last, once the rest is complete
  metadata.json             {"version": SCHEMA_VERSION, "feature_spec": ...,
                             "counts": ..., "vocabulary_sizes": ..., ...}
  vocab/<feature>.tsv       vocabulary of a categorical feature
  train/*.tfrecord.gz       gzip TFRecords of `tf.train.Example`
  test/*.tfrecord.gz

Each Example holds, for user features u and item features f (the first item
feature is `ITEM_ID`):

  u, f                      int64 [1]: vocabulary indices of the candidate
  hist_<f>                  int64 [n]: behaviours, oldest first, unpadded
  neg_hist_<f>              int64 [n]: DIEN's auxiliary negatives, aligned with
                            hist_<f> (only when the data has them)
  label                     float [1]: 0 or 1

Readers pad sequences at the end with `PADDING_INDEX` and add `hist_length`,
the number of valid behaviours. Vocabulary indices: `PADDING_INDEX` (0) is
padding, `OOV_INDEX` (1) out-of-vocabulary, real ids start at `FIRST_INDEX`
(2), ordered by decreasing count. A vocabulary file is tab-separated with the
header `index<TAB>id<TAB>count`, then one row per index from 0: `0 <pad> 0`,
`1 <oov> <count of ids mapped to OOV>`, then `index id count` for each id.
"""

from __future__ import annotations

from typing import Mapping

# Bump when the layout above changes; readers refuse other versions.
SCHEMA_VERSION = 1

PADDING_INDEX = 0
OOV_INDEX = 1
FIRST_INDEX = 2
PADDING_TOKEN = "<pad>"
OOV_TOKEN = "<oov>"

USER_ID = "user_id"
ITEM_ID = "item_id"
LABEL = "label"
HISTORY_PREFIX = "hist_"
NEGATIVE_PREFIX = "neg_hist_"
HISTORY_LENGTH = "hist_length"

METADATA_FILE = "metadata.json"
# Written last by `tfrs-din prepare`, once every other file is in place;
# readers refuse a directory without it (a failed or running job).
SUCCESS_FILE = "_SUCCESS"
VOCABULARY_DIR = "vocab"
VOCABULARY_HEADER = ("index", "id", "count")
SPLITS = ("train", "test")
TFRECORD_SUFFIX = ".tfrecord.gz"


def history_name(feature: str) -> str:
  """Name of the behaviour sequence of item feature `feature`.

  Example:

  >>> history_name("item_id"), negative_name("item_id")
  ('hist_item_id', 'neg_hist_item_id')
  """
  return HISTORY_PREFIX + feature


def negative_name(feature: str) -> str:
  """Name of the auxiliary negatives aligned with `history_name(feature)`."""
  return NEGATIVE_PREFIX + feature


def vocabulary_path(directory: str, feature: str) -> str:
  """Path of `feature`'s vocabulary file in a prepared directory."""
  return f"{directory.rstrip('/')}/{VOCABULARY_DIR}/{feature}.tsv"


def check_version(metadata: Mapping, source: str = "metadata.json") -> None:
  """Raises if prepared data was written under another schema version.

  Args:
    metadata: the parsed metadata.json.
    source: where it was read from, for the message.

  Raises:
    ValueError: naming the data's version and the one this code reads.

  Example:

  >>> check_version({"version": SCHEMA_VERSION})
  >>> check_version({"version": 0})
  Traceback (most recent call last):
  ...
  ValueError: metadata.json has data schema version 0, but this tfrs_din reads version 1: re-run `tfrs-din prepare` on the raw log with this version.
  """
  found = metadata.get("version")
  if found != SCHEMA_VERSION:
    raise ValueError(
        f"{source} has data schema version {found}, but this tfrs_din reads "
        f"version {SCHEMA_VERSION}: re-run `tfrs-din prepare` on the raw log "
        "with this version.")
