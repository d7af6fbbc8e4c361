"""Reading a `beam_jobs.prepare` output directory into `tf.data` pipelines.

Batches are as wide as their histories need, not `max_history` wide: each
batch's sequences are padded to its longest history rounded up to a bucket
boundary (`FeatureSpec.padded_width`), and training batches are made of
records of similar history length (`make_dataset`'s `bucket_boundaries`), so
the models' per-behaviour work (DIN's activation unit, DIEN's GRUs) runs
over the behaviours that exist, in a bounded number of batch shapes.

A split that fits (at most `shuffle_buffer` records, parsed values within
`IN_MEMORY_MAX_BYTES`) is read once and kept parsed in memory; every epoch
its batches are then cut by index, vectorised, instead of every record
passing through the pipeline again (`make_dataset`).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrs_din import schema
from tfrs_din.features import (DEFAULT_BUCKET_BOUNDARIES, HISTORY_LENGTH,
                               FeatureSpec)

if TYPE_CHECKING:
  from tfrs_din.data.negatives import FreshNegatives


def load_metadata(directory: str) -> dict:
  """The metadata.json of a prepared directory, checked against `schema`.

  Args:
    directory: output directory of the Beam job.

  Raises:
    FileNotFoundError: there is no metadata.json.
    ValueError: there is no `_SUCCESS` marker (the job failed or is still
      running), or the data was written under another `schema.SCHEMA_VERSION`.
  """
  path = os.path.join(directory, schema.METADATA_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: is {directory!r} the output of `tfrs-din "
        "prepare` (beam_jobs.prepare)?")
  if not tf.io.gfile.exists(os.path.join(directory, schema.SUCCESS_FILE)):
    raise ValueError(
        f"{directory!r} has no {schema.SUCCESS_FILE} marker: `tfrs-din prepare` "
        "did not finish writing it (it failed, was killed or is still running), "
        "so the data may be incomplete; re-run prepare with --overwrite.")
  with tf.io.gfile.GFile(path) as handle:
    metadata = json.load(handle)
  schema.check_version(metadata, path)
  return metadata


def load_feature_spec(directory: str, max_history: Optional[int] = None,
                      embedding_dim: Optional[int] = None
                      ) -> Tuple[FeatureSpec, dict]:
  """The `FeatureSpec` (with id frequencies for MBA) and the metadata.

  Args:
    directory: output directory of the Beam job.
    max_history: overrides the history length written by the job (shorter
      keeps the most recent behaviours).
    embedding_dim: overrides the embedding width of every feature.
  """
  metadata = load_metadata(directory)
  config = dict(metadata["feature_spec"])
  if max_history:
    config["max_history"] = max_history
  if embedding_dim:
    for group in ("user_features", "item_features"):
      config[group] = [dict(f, embedding_dim=embedding_dim)
                       for f in config[group]]
  from beam_jobs.vocabulary import load_vocabularies  # pylint: disable=g-import-not-at-top
  names = [f["name"] for f in config["user_features"] + config["item_features"]]
  frequencies = {n: v.frequencies()
                 for n, v in load_vocabularies(directory, names).items()}
  return FeatureSpec.from_dict(config, frequencies), metadata


# Records held by the training shuffle: every split up to this size is
# shuffled whole, so the order of its files does not reach the batches (a
# smaller window let the file's order move test GAUC: docs/results.md,
# "The order of the training records"). Memory grows with it, a few hundred
# bytes a record.
DEFAULT_SHUFFLE_BUFFER = 1_000_000


def check_shuffle_buffer(value: int, name: str = "shuffle_buffer") -> None:
  """Raises ValueError naming `name` unless `value` is an integer >= 1."""
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or value < 1):
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


# Length grouping (see `make_dataset`): records are grouped by bucket within
# blocks of this many batches' worth of shuffled records, and the formed
# batches are shuffled through a buffer of `BATCH_SHUFFLE_BLOCKS` blocks.
GROUP_BLOCK_BATCHES = 32
BATCH_SHUFFLE_BLOCKS = 2


# The in-memory path (see `make_dataset`) holds a split's parsed values up to
# this many bytes, as bounded by `record_bytes` (every history at
# `max_history`); a split above it streams from its files.
IN_MEMORY_MAX_BYTES = 512 * 2 ** 20
# Records parsed per step while a split is read into memory.
LOAD_BLOCK = 65_536


HOLDOUTS = (None, "exclude", "only")
# What a holdout holds out: a share of whole users, or every user's last
# training target (`tfrs_din.data.last_target`).
HOLDOUT_BY = ("users", "last")


def in_holdout(users: tf.Tensor, fraction: float, seed: int = 0) -> tf.Tensor:
  """True for the users of a `fraction` of all users, chosen by a seeded hash.

  Whole users are held out (never some of a user's samples), so a validation
  split made this way measures generalisation to users the model did not
  train on, as the test split does under the labelled protocol, and leaks no
  user's future into training under the next-item protocol.

  Args:
    users: [B] integer user indices (the feature spec's group key).
    fraction: share of users held out, in [0, 1).
    seed: salt of the hash: another seed holds out other users.
  """
  keys = tf.strings.join([tf.strings.as_string(tf.cast(users, tf.int64)),
                          tf.strings.as_string(tf.constant(seed, tf.int64))],
                         separator=":")
  buckets = tf.strings.to_hash_bucket_fast(keys, 1_000_000)
  return buckets < int(round(fraction * 1_000_000))


def make_dataset(directory: str, split: str, spec: FeatureSpec,
                 batch_size: int = 256, shuffle: bool = False,
                 with_negatives: bool = True, seed: int = 0,
                 repeat: bool = False, holdout: Optional[str] = None,
                 holdout_fraction: float = 0.1,
                 holdout_seed: int = 0,
                 holdout_by: str = "users",
                 fresh_negatives: Optional["FreshNegatives"] = None,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                 bucket_boundaries: Optional[Sequence[int]] = (
                     DEFAULT_BUCKET_BOUNDARIES),
                 group_by_length: bool = False,
                 in_memory_max_bytes: int = IN_MEMORY_MAX_BYTES
                 ) -> tf.data.Dataset:
  """Batched, parsed features of a split ("train" or "test").

  Files are read in parallel (interleaved), records shuffled with a seeded
  buffer when `shuffle`, batches parsed vectorised with `parse_example`, and
  the pipeline is prefetched.

  Padding. With `bucket_boundaries` (the default), a batch's sequences
  (`hist_*`, and `neg_hist_*` alike, prepared or fresh) are padded to its
  longest history rounded up to the next boundary, `max_history` being the
  last one (`FeatureSpec.padded_width`): at most `len(boundaries) + 1`
  widths exist, so a `tf.function` over the batches traces at most once per
  width (Keras' `fit` traces once: its step takes the iterator). With
  `bucket_boundaries=None` every batch is [B, max_history], as before.

  Length grouping (`group_by_length`, off by default), a fair shuffle in
  three stages:
    1. records are shuffled as without grouping (`shuffle_buffer`);
    2. the shuffled stream is cut into blocks of `GROUP_BLOCK_BATCHES *
       batch_size` records; in each block the records are stably sorted by
       bucket (the first boundary >= their history length) and cut into
       batches of `batch_size`: a batch holds records drawn at random from
       the block's records of its bucket (a batch at a bucket change spans
       two buckets and is padded for the longer);
    3. the batches are shuffled through a buffer of `BATCH_SHUFFLE_BLOCKS`
       blocks' batches (seeded, anew every epoch), so the buckets' batches
       interleave over the epoch instead of running short-to-long.
  Every record is in exactly one batch per epoch, every batch holds
  `batch_size` records but the epoch's last, and the number of batches is
  that of ungrouped batching; only which records share a batch changes,
  by their history length (tests/data/test_bucketing.py checks that the
  batches' label and user mix stay those of ungrouped batches).

  In memory. A split of at most `shuffle_buffer` records (counted before a
  user holdout, which only removes records) whose parsed values fit
  `in_memory_max_bytes` (`record_bytes` per record) is read once, on the
  first pass: its records, in file order and holdout-filtered, are parsed
  in blocks of `LOAD_BLOCK` and kept as ragged values (ids as int32 when
  every vocabulary allows). Each pass then orders the records by index,
  vectorised, with the semantics above: a seeded permutation (anew every
  pass), stably sorted by bucket within blocks of `GROUP_BLOCK_BATCHES *
  batch_size`, cut into batches whose order is permuted within windows of
  `GROUP_BLOCK_BATCHES * BATCH_SHUFFLE_BLOCKS` batches; without `shuffle`
  the file order, cut as the files stream it. Every batch gathers its rows
  and is padded as above, with the dtypes parsing gives. With `repeat`
  every pass is one epoch (its last batch may be short). A larger split
  streams from its files (the whole pipeline above, record by record). The
  records are read inside the pipeline, so tf.distribute still shards them
  by file.

  Args:
    directory: output directory of `beam_jobs.prepare`.
    split: "train" or "test".
    spec: the `FeatureSpec`.
    batch_size: examples per batch.
    shuffle: shuffle files and records (seeded by `seed`).
    with_negatives: also parse DIEN's auxiliary negatives.
    seed: seed of the shuffling.
    repeat: repeat forever.
    holdout: None (every example), "exclude" (drop the held-out examples)
      or "only" (keep only them): a validation split, see `holdout_by`.
      Records are filtered before they are batched, so batches are full.
    holdout_fraction: share of users held out (`holdout_by="users"`).
    holdout_seed: which users are held out (`holdout_by="users"`).
    holdout_by: "users" (whole users, see `in_holdout`) or "last" (every
      user's last training target, see `tfrs_din.data.last_target`).
    fresh_negatives: draws DIEN's auxiliary negatives `neg_hist_*` for every
      batch (after the holdout filter) instead of reading them from the
      records, anew on every pass, keyed by `seed` (see
      `tfrs_din.data.negatives`); None reads the prepared ones when
      `with_negatives`.
    shuffle_buffer: records held by the shuffle (`shuffle`). A split up to
      this size is shuffled whole, every epoch anew (in memory, if it fits
      `in_memory_max_bytes`); a larger one streams through a window of this
      many records, so that the order of its files (and of the records in
      a file) reaches the batches beyond it.
    bucket_boundaries: upper bounds of the history-length buckets (see
      above; boundaries >= `max_history` are dropped, `max_history` is
      always the last); None pads every batch to `max_history` and groups
      nothing.
    group_by_length: group records of similar history length into shuffled
      batches (see above; needs `bucket_boundaries`). Off by default: batches
      of like lengths give Dice's and the batch norms' batch statistics
      another distribution than random batches, and the base model trained
      so scored a lower test AUC on Amazon Toys (docs/results.md); the
      models compute only the valid behaviours, so it saves little.
    in_memory_max_bytes: bound of the parsed values the in-memory path may
      hold (see above); 0 always streams.
  """
  if holdout not in HOLDOUTS:
    raise ValueError(f"holdout must be one of {HOLDOUTS}, got {holdout!r}")
  if holdout_by not in HOLDOUT_BY:
    raise ValueError(f"holdout_by must be one of {HOLDOUT_BY}, got "
                     f"{holdout_by!r}")
  if holdout and spec.group_key is None:
    raise ValueError("a user holdout needs the feature spec's group_key")
  check_shuffle_buffer(shuffle_buffer)
  by_user = holdout if holdout_by == "users" else None
  if by_user and not 0.0 < holdout_fraction < 1.0:
    raise ValueError("holdout_fraction must be in (0, 1), got "
                     f"{holdout_fraction!r}")
  files = _split_files(directory, split)
  selected = None
  if holdout and holdout_by == "last":
    from tfrs_din.data.last_target import last_target_flags  # pylint: disable=g-import-not-at-top
    flags, counts = last_target_flags(files, spec)
    selected = (flags if holdout == "only" else ~flags), counts
  if group_by_length and bucket_boundaries is None:
    raise ValueError("group_by_length needs bucket_boundaries (the buckets "
                     "records are grouped by); got bucket_boundaries=None")
  padding = ("max_history" if bucket_boundaries is None
             else spec.bucket_boundaries(bucket_boundaries))
  if (isinstance(in_memory_max_bytes, bool)
      or not isinstance(in_memory_max_bytes, (int, np.integer))
      or in_memory_max_bytes < 0):
    raise ValueError("in_memory_max_bytes must be an integer >= 0, got "
                     f"{in_memory_max_bytes!r}")
  parse_negatives = with_negatives and fresh_negatives is None
  records = in_memory_records(directory, split, spec, parse_negatives,
                              shuffle_buffer, in_memory_max_bytes, files,
                              selected)
  if records is not None:
    loaded = _load_records(_records(files, False, seed, selected), spec,
                           parse_negatives, records, by_user,
                           holdout_fraction, holdout_seed)
    ds = _in_memory_batches(loaded, spec, batch_size, shuffle, seed, repeat,
                            padding if group_by_length else None, padding)
    if fresh_negatives is not None:
      ds = fresh_negatives.apply(ds, seed)
    return ds.prefetch(tf.data.AUTOTUNE)
  ds = _records(files, shuffle, seed, selected)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  if by_user:
    ds = _select_users(ds, spec.group_key, by_user == "only",
                       holdout_fraction, holdout_seed)
  if group_by_length:
    ds = ds.batch(batch_size * GROUP_BLOCK_BATCHES)
    ds = ds.map(lambda s: spec.parse_examples(s, parse_negatives,
                                              padding=None),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda f: _length_grouped_batches(f, batch_size, padding),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.unbatch()     # one element per batch: [rows, (n)] sequences
    ds = ds.map(lambda f: spec.pad_sequences(f, padding),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
      ds = ds.shuffle(GROUP_BLOCK_BATCHES * BATCH_SHUFFLE_BLOCKS,
                      seed=_batch_shuffle_seed(seed),
                      reshuffle_each_iteration=True)
  else:
    ds = ds.batch(batch_size)
    ds = ds.map(lambda s: spec.parse_examples(s, parse_negatives,
                                              padding=padding),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if fresh_negatives is not None:
    ds = fresh_negatives.apply(ds, seed)
  return ds.prefetch(tf.data.AUTOTUNE)


def _select_users(records: tf.data.Dataset, group_key: str, held_out: bool,
                  fraction: float, seed: int,
                  block: int = 4096) -> tf.data.Dataset:
  """The serialized records of the held-out users (`held_out`) or of the
  others, by `in_holdout` of their `group_key`; vectorised over blocks of
  `block` records (only the key is parsed), the order kept."""
  spec = {group_key: tf.io.FixedLenFeature([], tf.int64)}

  def select(serialized):
    users = tf.io.parse_example(serialized, spec)[group_key]
    keep = in_holdout(users, fraction, seed)
    return tf.boolean_mask(serialized, keep if held_out
                           else tf.logical_not(keep))

  return records.batch(block).map(
      select, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True).unbatch()


def _batch_shuffle_seed(seed: int) -> int:
  """The seed of the batch shuffle: derived from `seed`, so that it does not
  repeat the record shuffle's stream."""
  return (seed * 1_000_003 + 0xBA7C4) % (2 ** 31)


def _length_grouped_batches(features: Dict[str, tf.Tensor], batch_size: int,
                            boundaries: Tuple[int, ...]
                            ) -> Dict[str, tf.Tensor]:
  """A block of parsed records (ragged sequences) cut into batches of records
  of the same bucket: stage 2 of `make_dataset`'s grouping.

  The records are stably sorted by bucket index (the first boundary >= the
  history length; stable, so within a bucket they keep their shuffled
  order), then cut into consecutive batches of `batch_size`. Every value
  gets a leading ragged batch dimension: [batches, (rows), ...].
  """
  lengths = features[HISTORY_LENGTH]
  bucket = tf.searchsorted(tf.constant(boundaries, lengths.dtype), lengths,
                           side="left")
  order = tf.argsort(bucket, stable=True)
  size = tf.shape(lengths, out_type=tf.int64)[0]
  splits = tf.concat([tf.range(0, size, batch_size, dtype=tf.int64),
                      size[tf.newaxis]], 0)
  out = {}
  for name, value in features.items():
    dtype = (value.row_splits.dtype if isinstance(value, tf.RaggedTensor)
             else tf.int64)
    out[name] = tf.RaggedTensor.from_row_splits(
        tf.gather(value, order), tf.cast(splits, dtype), validate=False)
  return out


def _split_files(directory: str, split: str) -> list:
  pattern = os.path.join(directory, split, "*" + schema.TFRECORD_SUFFIX)
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"no TFRecord files match {pattern!r}")
  return files


def _records(files: list, shuffle: bool, seed: int,
             keep: Optional[Tuple[np.ndarray, np.ndarray]] = None
             ) -> tf.data.Dataset:
  """Serialized records of `files`, read in parallel (interleaved), files
  shuffled when `shuffle`. `keep` = (one boolean per record of `files` in
  order, records per file) keeps only the flagged records (each record is
  numbered by its position in the split to look its flag up)."""
  if keep is None:
    ds = tf.data.Dataset.from_tensor_slices(files)
    read = lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP")
  else:
    flags, counts = keep
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flags = tf.constant(flags)
    ds = tf.data.Dataset.from_tensor_slices((files, offsets))
    read = lambda f, offset: tf.data.TFRecordDataset(
        f, compression_type="GZIP").enumerate(offset).filter(
            lambda index, _: tf.gather(flags, index)).map(
                lambda _, record: record)
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed)
  return ds.interleave(read, cycle_length=min(len(files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _storage_dtype(spec: FeatureSpec) -> tf.DType:
  """The dtype the in-memory path keeps sequence ids in: int32 when every
  item vocabulary's indices fit it (cast back to int64 per batch)."""
  largest = max((f.vocab_size for f in spec.item_features), default=0)
  return tf.int32 if largest <= np.iinfo(np.int32).max else tf.int64


def record_bytes(spec: FeatureSpec, with_negatives: bool) -> int:
  """Bytes one record's parsed values may take in memory: every sequence at
  `max_history` (ids in `_storage_dtype`, one row split each), int64 ids,
  hist_length, float32 numeric features and label. An upper bound: real
  histories are mostly shorter."""
  item_bytes = _storage_dtype(spec).size
  sequences = len(spec.history_names()) + (
      len(spec.negative_names()) if with_negatives else 0)
  ids = len(spec.user_features) + len(spec.item_features) + 1
  floats = len(spec.numeric_features) + 1
  return 8 * ids + 4 * floats + sequences * (8 + item_bytes * spec.max_history)


def _metadata_count(directory: str, split: str) -> Optional[int]:
  """The records `beam_jobs.prepare` counted into `split`, or None when the
  directory has no such count (e.g. records written by other means)."""
  path = os.path.join(directory, schema.METADATA_FILE)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as handle:
      count = json.load(handle).get("counts", {}).get(f"samples_{split}")
  except (ValueError, AttributeError):
    return None
  if isinstance(count, bool) or not isinstance(count, int):
    return None
  return count


def _count_records(files: Sequence[str], stop: int) -> int:
  """The records of `files`, counted up to `stop` (a read of the files)."""
  ds = tf.data.Dataset.from_tensor_slices(list(files)).interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
      cycle_length=min(len(files), 8), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=False)
  return int(ds.take(stop).batch(4096).reduce(
      tf.constant(0, tf.int64),
      lambda count, batch: count + tf.size(batch, out_type=tf.int64)))


def in_memory_records(directory: str, split: str, spec: FeatureSpec,
                      with_negatives: bool, shuffle_buffer: int,
                      max_bytes: int, files: Optional[Sequence[str]] = None,
                      selected: Optional[Tuple[np.ndarray, np.ndarray]] = None
                      ) -> Optional[int]:
  """The records `make_dataset` keeps in memory (a bound), or None when the
  split streams: it does when it has more than `shuffle_buffer` records or
  `record_bytes` of them exceed `max_bytes`.

  The count is the prepare job's (metadata.json), else a read of the files
  (stopped past the limit); with `selected` (a last-target holdout: one
  flag per record, records per file) the flagged records. A user holdout
  is not counted: the split's count bounds it.

  Args:
    directory: output directory of `beam_jobs.prepare`.
    split: "train" or "test".
    spec: the `FeatureSpec`.
    with_negatives: the prepared negatives are parsed too.
    shuffle_buffer: the most records the in-memory path takes.
    max_bytes: the most bytes of parsed values it may hold; 0: none.
    files: the split's files (default: those of `directory`).
    selected: the records a last-target holdout keeps.
  """
  if max_bytes <= 0:
    return None
  limit = min(int(shuffle_buffer),
              int(max_bytes) // record_bytes(spec, with_negatives))
  if limit < 1:
    return None
  if selected is not None:
    count = int(np.count_nonzero(selected[0]))
  else:
    count = _metadata_count(directory, split)
    if count is None:
      count = _count_records(files or _split_files(directory, split),
                             limit + 1)
  return count if count <= limit else None


def _load_records(records: tf.data.Dataset, spec: FeatureSpec,
                  with_negatives: bool, count: int, by_user: Optional[str],
                  fraction: float, seed: int) -> tf.data.Dataset:
  """`records` parsed, as one element holding them all, read on the first
  pass and cached.

  Blocks of `LOAD_BLOCK` serialized records are parsed (unpadded), the
  users of a holdout (`by_user`: "only" or "exclude", see `in_holdout`)
  kept, sequence ids cast to `_storage_dtype`, and the blocks joined: a dict
  of [N] tensors (one value per record) and of (values, row_splits) pairs
  (sequences), in the order of `records`. `count` bounds the records: more
  (a stale count) make more elements, each a part of the records.
  """
  dtype = _storage_dtype(spec)

  def parse(serialized):
    features = spec.parse_examples(serialized, with_negatives, padding=None)
    if by_user:
      keep = in_holdout(features[spec.group_key], fraction, seed)
      if by_user != "only":
        keep = tf.logical_not(keep)
      features = {n: (tf.ragged.boolean_mask(v, keep)
                      if isinstance(v, tf.RaggedTensor)
                      else tf.boolean_mask(v, keep))
                  for n, v in features.items()}
    return {n: (v.with_values(tf.cast(v.values, dtype))
                if isinstance(v, tf.RaggedTensor) else v)
            for n, v in features.items()}

  def join(blocks):  # [blocks, (records), ...] -> [records, ...]
    out = {}
    for name, value in blocks.items():
      if value.ragged_rank == 2:
        value = value.merge_dims(0, 1)
        out[name] = (value.values, value.row_splits)
      else:
        out[name] = value.values
    return out

  blocks = records.batch(LOAD_BLOCK).map(
      parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # Every block in one element (the cost of a ragged batch grows with its
  # size, so it is no larger than the blocks that `count` makes).
  loaded = blocks.ragged_batch(max(1, -(-count // LOAD_BLOCK))).map(join)
  # A buffer of two reads the cache to its end before passing the element
  # on: the cache is complete, and read from on the next pass, even when
  # the first pass stops early.
  return loaded.cache().shuffle(2, seed=0)


def _epoch_batches(data: Dict[str, tf.Tensor], key: tf.Tensor,
                   batch_size: int, shuffle: bool,
                   boundaries: Optional[Tuple[int, ...]]
                   ) -> tf.data.Dataset:
  """One pass over the in-memory records `data`: (data, rows) per batch,
  rows the [<= batch_size] record indices of the batch.

  Vectorised over the records: a permutation (`shuffle`, keyed by `key`)
  or the stored order; with `boundaries`, stably sorted by bucket within
  blocks of `GROUP_BLOCK_BATCHES * batch_size` records, and (`shuffle`) the
  batches' order permuted within windows of `GROUP_BLOCK_BATCHES *
  BATCH_SHUFFLE_BLOCKS` batches.
  """
  lengths = data[HISTORY_LENGTH]
  size = tf.size(lengths, out_type=tf.int64)
  keys = tf.random.experimental.stateless_split(key, num=2)
  rows = tf.range(size)
  if shuffle:
    rows = tf.random.experimental.stateless_shuffle(rows, seed=keys[0])
  if boundaries is not None:
    bucket = tf.searchsorted(tf.constant(boundaries, lengths.dtype),
                             tf.gather(lengths, rows), side="left",
                             out_type=tf.int64)
    block = tf.range(size) // (batch_size * GROUP_BLOCK_BATCHES)
    rows = tf.gather(rows, tf.argsort(
        block * (len(boundaries) + 1) + bucket, stable=True))
  batches = (size + batch_size - 1) // batch_size
  order = tf.range(batches)
  if shuffle and boundaries is not None:
    window = order // (GROUP_BLOCK_BATCHES * BATCH_SHUFFLE_BLOCKS)
    noise = tf.random.stateless_uniform(tf.reshape(batches, [1]), keys[1],
                                        dtype=tf.float64)
    order = tf.cast(tf.argsort(tf.cast(window, tf.float64) + noise,
                               stable=True), tf.int64)
  return tf.data.Dataset.from_tensor_slices(order * batch_size).map(
      lambda start: (data, rows[start:start + batch_size]))


def _gather_batch(data: Dict[str, tf.Tensor], rows: tf.Tensor,
                  spec: FeatureSpec, padding) -> Dict[str, tf.Tensor]:
  """The in-memory records `rows` as a batch: sequences gathered, cast back
  to int64 and padded to `padding` (`FeatureSpec.pad_sequences`)."""
  features = {}
  for name, value in data.items():
    if isinstance(value, tuple):
      values, splits = value
      batch = tf.gather(tf.RaggedTensor.from_row_splits(values, splits,
                                                        validate=False), rows)
      features[name] = batch.with_values(tf.cast(batch.values, tf.int64))
    else:
      features[name] = tf.gather(value, rows)
  return spec.pad_sequences(features, padding)


def _epoch_seed(seed: int) -> int:
  """The seed of the in-memory path's per-pass keys: derived from `seed`,
  so that they do not repeat `FreshNegatives.apply`'s key stream."""
  return (seed * 1_000_003 + 0x3E3) % (2 ** 31)


def _in_memory_batches(loaded: tf.data.Dataset, spec: FeatureSpec,
                       batch_size: int, shuffle: bool, seed: int,
                       repeat: bool, boundaries: Optional[Tuple[int, ...]],
                       padding) -> tf.data.Dataset:
  """The batches of the in-memory records (`_load_records`), pass by pass
  (`_epoch_batches`; `boundaries` None: no length grouping), each padded
  to `padding`. A pass's key comes from a seeded random stream drawn anew
  on every iteration of the dataset (and, with `repeat`, on every pass)."""
  passes = loaded.repeat() if repeat else loaded
  if shuffle:
    keys = tf.data.Dataset.random(seed=_epoch_seed(seed),
                                  rerandomize_each_iteration=True).batch(2)
    passes = tf.data.Dataset.zip((passes, keys))
  else:
    passes = passes.map(lambda data: (data, tf.zeros([2], tf.int64)))
  ds = passes.flat_map(lambda data, key: _epoch_batches(
      data, key, batch_size, shuffle, boundaries))
  return ds.map(lambda data, rows: _gather_batch(data, rows, spec, padding),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
