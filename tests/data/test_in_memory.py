"""The in-memory path of `make_dataset`: a split that fits is read once and
batched by index every pass. Against the streaming path (the same split
read record by record, `in_memory_max_bytes=0`): the same records every
epoch, the same number of batches, the same batches in the same order when
unshuffled, the same dtypes and shapes; reshuffled every pass and
reproducible by seed; and a split above `shuffle_buffer` or the byte bound
streams from its files."""

import collections
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from prepared_log import prepared_log
from tfrs_din.data import pipeline
from tfrs_din.data.negatives import FreshNegatives
from tfrs_din.data.pipeline import (in_memory_records, load_feature_spec,
                                    make_dataset, record_bytes)
from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.features import HISTORY_LENGTH, PADDING_INDEX

BATCH = 32
STREAM = dict(in_memory_max_bytes=0)
# The log of the `data` and `directory` fixtures (tests/data/conftest.py):
# `directory` holds its records only (no metadata.json).
SYNTHETIC = SyntheticConfig(num_users=150, max_steps=40, max_history=20,
                            seed=3)


@pytest.fixture(autouse=True)
def _small_load_blocks(monkeypatch):
  """Blocks far smaller than the splits here, so that loading joins many
  parsed blocks (a holdout filters each of them)."""
  monkeypatch.setattr(pipeline, "LOAD_BLOCK", 700)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """A prepared directory (metadata, vocabularies, item table) whose users
  and last targets can be held out."""
  return prepared_log(tmp_path_factory.mktemp("in_memory_prepared"),
                      SyntheticConfig(num_users=70, max_steps=25, seed=4),
                      "--protocol", "next_item", "--max_history", "6",
                      "--embedding_dim", "4", "--num_shards", "3")


def _keys(batch, skip=()):
  """One hashable key per record of a batch: every feature (but `skip`),
  sequences cut to the record's history length."""
  lengths = batch[HISTORY_LENGTH]
  names = sorted(n for n in batch if n not in skip)
  return [tuple((n, tuple(batch[n][i, :lengths[i]].tolist())
                 if batch[n].ndim == 2 else batch[n][i].item())
                for n in names) for i in range(len(lengths))]


def _epoch(ds):
  return [{k: v.numpy() for k, v in b.items()} for b in ds]


def _check_padding(batch):
  """Every sequence as wide as the history, padding past each record's
  history length."""
  lengths = batch[HISTORY_LENGTH]
  width = batch["hist_item_id"].shape[1]
  padded = np.arange(width)[None] >= lengths[:, None]
  for name, value in batch.items():
    if value.ndim == 2:
      assert value.shape == (len(lengths), width), name
      assert (value[padded] == PADDING_INDEX).all(), name


def _assert_same_passes(in_memory, streaming, records, shuffled, epochs=2,
                        skip=()):
  assert in_memory.element_spec == streaming.element_spec
  orders = []
  for _ in range(epochs):
    mine, theirs = _epoch(in_memory), _epoch(streaming)
    assert len(mine) == len(theirs) == -(-records // BATCH)
    sizes = [len(b[HISTORY_LENGTH]) for b in mine]
    assert sizes.count(BATCH) == len(mine) - 1
    assert sum(sizes) == records
    for batch in mine:
      _check_padding(batch)
    keys = [_keys(b, skip) for b in mine]
    assert (collections.Counter(k for b in keys for k in b)
            == collections.Counter(k for b in theirs for k in _keys(b, skip)))
    if not shuffled:      # the file order, cut and padded alike
      for batch, reference in zip(mine, theirs):
        assert batch.keys() == reference.keys()
        for name in batch:
          np.testing.assert_array_equal(batch[name], reference[name], name)
    orders.append(keys)
  if shuffled:
    assert orders[0] != orders[1]                  # a new order every pass
  else:
    assert orders[0] == orders[1]


CASES = {
    "grouped": dict(shuffle=True, group_by_length=True),
    "ungrouped": dict(shuffle=True, group_by_length=False),
    "max_history": dict(shuffle=True, bucket_boundaries=None),
    "unshuffled": dict(),
    "unshuffled_grouped": dict(group_by_length=True),
    "unshuffled_max_history": dict(bucket_boundaries=None),
}


@pytest.mark.parametrize("case", CASES)
def test_in_memory_and_streaming_passes_hold_the_same_records(
    data, directory, case):
  kwargs = dict(CASES[case], batch_size=BATCH, seed=5, with_negatives=True)
  records = int((~data.arrays["is_test"]).sum())
  assert in_memory_records(directory, "train", data.spec, True, 10 ** 6,
                           pipeline.IN_MEMORY_MAX_BYTES) == records
  _assert_same_passes(make_dataset(directory, "train", data.spec, **kwargs),
                      make_dataset(directory, "train", data.spec, **kwargs,
                                   **STREAM),
                      records, shuffled=kwargs.get("shuffle", False))


HOLDOUTS = {
    "users_exclude": dict(holdout="exclude", holdout_fraction=0.3),
    "users_only": dict(holdout="only", holdout_fraction=0.3),
    "last_exclude": dict(holdout="exclude", holdout_by="last"),
    "last_only": dict(holdout="only", holdout_by="last"),
}


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled",
                                                        "unshuffled"])
@pytest.mark.parametrize("holdout", HOLDOUTS)
def test_holdouts_keep_the_same_records_on_both_paths(prepared, holdout,
                                                      shuffle):
  spec, _ = load_feature_spec(prepared)
  kwargs = dict(HOLDOUTS[holdout], batch_size=BATCH, shuffle=shuffle, seed=2)
  in_memory = make_dataset(prepared, "train", spec, **kwargs)
  streaming = make_dataset(prepared, "train", spec, **kwargs, **STREAM)
  records = sum(len(b[HISTORY_LENGTH]) for b in streaming)
  every = sum(len(b[HISTORY_LENGTH]) for b in make_dataset(
      prepared, "train", spec, 256))
  assert 0 < records < every      # the holdout took some records, not all
  _assert_same_passes(in_memory, streaming, records, shuffle)


def test_fresh_negatives_are_drawn_for_in_memory_batches(prepared):
  spec, _ = load_feature_spec(prepared)
  sampler = FreshNegatives.from_prepared(prepared, spec)
  kwargs = dict(batch_size=BATCH, shuffle=True, seed=1,
                fresh_negatives=sampler)
  in_memory = make_dataset(prepared, "train", spec, **kwargs)
  streaming = make_dataset(prepared, "train", spec, **kwargs, **STREAM)
  records = sum(len(b[HISTORY_LENGTH]) for b in streaming)
  negatives = ("neg_hist_item_id", "neg_hist_category_id")
  _assert_same_passes(in_memory, streaming, records, True, skip=negatives)
  first, second = _epoch(in_memory), _epoch(in_memory)
  for batch in first:
    valid = (np.arange(batch["hist_item_id"].shape[1])[None]
             < batch[HISTORY_LENGTH][:, None])
    assert (batch["neg_hist_item_id"][valid] >= 2).all()
    for row, negative in zip(batch["hist_item_id"], batch["neg_hist_item_id"]):
      assert not set(row[row > 0]) & set(negative[negative > 0])
  # Drawn anew every pass: a record's negatives change.
  draws = [{key: tuple(negative[:length]) for b in epoch
            for key, negative, length in zip(
                _keys(b, skip=negatives), b["neg_hist_item_id"],
                b[HISTORY_LENGTH])} for epoch in (first, second)]
  assert draws[0].keys() == draws[1].keys()
  assert np.mean([draws[0][k] != draws[1][k] for k in draws[0]]) > 0.5


def test_passes_are_reshuffled_and_a_seed_reproduces_them(data, directory):
  def passes(seed, epochs=2):
    tf.keras.utils.set_random_seed(0)
    ds = make_dataset(directory, "train", data.spec, BATCH, shuffle=True,
                      seed=seed)
    return [[_keys(b) for b in _epoch(ds)] for _ in range(epochs)]

  first = passes(seed=0)
  assert first[0] != first[1]
  assert passes(seed=0) == first             # batch for batch, every pass
  assert passes(seed=1, epochs=1)[0] != first[0]


def test_repeat_makes_every_pass_one_epoch(data, directory):
  records = int((~data.arrays["is_test"]).sum())
  batches = -(-records // BATCH)
  expected = collections.Counter(k for b in _epoch(make_dataset(
      directory, "train", data.spec, BATCH)) for k in _keys(b))
  ds = make_dataset(directory, "train", data.spec, BATCH, shuffle=True,
                    repeat=True)
  stream = _epoch(ds.take(3 * batches))
  orders = []
  for epoch in range(3):
    passed = stream[epoch * batches:(epoch + 1) * batches]
    sizes = [len(b[HISTORY_LENGTH]) for b in passed]
    assert sizes.count(BATCH) == batches - 1
    keys = [k for b in passed for k in _keys(b)]
    assert collections.Counter(keys) == expected
    orders.append(keys)
  assert orders[0] != orders[1] != orders[2]


def _move_records(directory, split, away):
  """Moves a split's record files out of (`away`) or back into place."""
  source, target = f"{directory}/{split}", f"{directory}/{split}_away"
  if not away:
    source, target = target, source
  shutil.move(source, target)


def test_a_split_that_fits_is_read_once(data, directory, tmp_path):
  """One batch of the first pass loads the whole split: with the files gone
  every later pass still holds every record."""
  copy = str(tmp_path / "copy")
  shutil.copytree(directory, copy)
  expected = collections.Counter(k for b in _epoch(make_dataset(
      directory, "train", data.spec, BATCH)) for k in _keys(b))
  ds = make_dataset(copy, "train", data.spec, BATCH, shuffle=True)
  next(iter(ds))
  _move_records(copy, "train", away=True)
  for _ in range(2):
    assert collections.Counter(
        k for b in _epoch(ds) for k in _keys(b)) == expected


def test_a_split_above_shuffle_buffer_or_the_byte_bound_streams(
    data, directory, tmp_path):
  copy = str(tmp_path / "copy")
  shutil.copytree(directory, copy)
  records = int((~data.arrays["is_test"]).sum())
  size = record_bytes(data.spec, True)
  spec = data.spec
  fits = dict(shuffle_buffer=records, in_memory_max_bytes=records * size)
  assert in_memory_records(copy, "train", spec, True, **{
      "shuffle_buffer": records, "max_bytes": records * size}) == records
  above = [dict(shuffle_buffer=records - 1),
           dict(in_memory_max_bytes=records * size - 1), STREAM]
  for kwargs in above:
    assert in_memory_records(
        copy, "train", spec, True, kwargs.get("shuffle_buffer", 10 ** 6),
        kwargs.get("in_memory_max_bytes", 2 ** 40)) is None
  datasets = [make_dataset(copy, "train", spec, BATCH, shuffle=True, **kwargs)
              for kwargs in [fits] + above]
  for ds in datasets:
    assert sum(len(b[HISTORY_LENGTH]) for b in ds) == records
  _move_records(copy, "train", away=True)
  try:
    assert sum(len(b[HISTORY_LENGTH]) for b in datasets[0]) == records
    for ds in datasets[1:]:       # streams: reads the (missing) files again
      with pytest.raises(tf.errors.NotFoundError):
        sum(1 for _ in ds)
  finally:
    _move_records(copy, "train", away=False)


def test_the_count_comes_from_the_metadata_or_the_holdout(prepared):
  """Prepared data: the prepare job's count (a record more than the buffer
  streams); a last-target holdout: the records it keeps."""
  spec, metadata = load_feature_spec(prepared)
  records = metadata["counts"]["samples_train"]
  every = sum(len(b[HISTORY_LENGTH]) for b in make_dataset(
      prepared, "train", spec, 256, **STREAM))
  assert records == every
  assert in_memory_records(prepared, "train", spec, False, records,
                           2 ** 30) == records
  assert in_memory_records(prepared, "train", spec, False, records - 1,
                           2 ** 30) is None
  flags = np.zeros(records, bool)
  flags[:5] = True
  assert in_memory_records(prepared, "train", spec, False, 5, 2 ** 30,
                           selected=(flags, np.array([records]))) == 5


def test_record_bytes_bounds_a_record_at_max_history(data):
  """The synthetic spec: user_id, item_id, category_id and hist_length as
  int64, the label as float32; hist_item_id and hist_category_id (and their
  negatives) of 20 int32 ids with one int64 row split each."""
  scalars = 4 * 8 + 4
  assert record_bytes(data.spec, False) == scalars + 2 * (8 + 4 * 20)
  assert record_bytes(data.spec, True) == scalars + 4 * (8 + 4 * 20)


def test_in_memory_max_bytes_is_validated(data, directory):
  for bad in (-1, 2.5, True, "1"):
    with pytest.raises(ValueError, match="in_memory_max_bytes must be an "
                       "integer >= 0"):
      make_dataset(directory, "train", data.spec, BATCH,
                   in_memory_max_bytes=bad)


def test_an_empty_split_gives_no_batch(data, directory, tmp_path):
  copy = str(tmp_path / "empty")
  shutil.copytree(directory, copy)
  options = tf.io.TFRecordOptions(compression_type="GZIP")
  for name in os.listdir(f"{copy}/train"):
    with tf.io.TFRecordWriter(f"{copy}/train/{name}", options):
      pass
  for kwargs in ({}, STREAM):
    assert not list(make_dataset(copy, "train", data.spec, BATCH,
                                 shuffle=True, **kwargs))
