"""Reading a prepared directory: the user holdout that makes a validation
split out of the training users, and the schema-version check."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din import schema
from tfrs_din.data.pipeline import (in_holdout, load_feature_spec,
                                    load_metadata, make_dataset)
from batch_arrays import concatenated
from prepared_log import prepared_log
from tfrs_din.data.synthetic import SyntheticConfig


def test_in_holdout_takes_the_asked_share_of_users_and_depends_on_the_seed():
  users = tf.range(2, 40_002, dtype=tf.int64)
  held = in_holdout(users, 0.1, seed=0).numpy()
  assert held.mean() == pytest.approx(0.1, abs=0.006)
  assert np.array_equal(held, in_holdout(users, 0.1, seed=0).numpy())
  other = in_holdout(users, 0.1, seed=1).numpy()
  # Independent draws overlap in about 0.1 * 0.1 of the users.
  assert (held & other).mean() == pytest.approx(0.01, abs=0.004)
  # A larger fraction holds out a superset of the users.
  assert not (held & ~in_holdout(users, 0.3, seed=0).numpy()).any()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return prepared_log(tmp_path_factory.mktemp("holdout"),
                      SyntheticConfig(num_users=80, max_steps=20, seed=2),
                      "--max_history", "6", "--embedding_dim", "4")


def _examples(ds):
  users, labels = [], []
  for batch in ds:
    users.append(batch["user_id"].numpy())
    labels.append(batch["label"].numpy())
  return np.concatenate(users), np.concatenate(labels)


def test_holdout_splits_the_training_users_into_two_disjoint_parts(prepared):
  spec, _ = load_feature_spec(prepared)
  every, _ = _examples(make_dataset(prepared, "train", spec, 32))
  kept, _ = _examples(make_dataset(prepared, "train", spec, 32,
                                   holdout="exclude", holdout_fraction=0.25))
  held, _ = _examples(make_dataset(prepared, "train", spec, 32,
                                   holdout="only", holdout_fraction=0.25))
  assert len(kept) + len(held) == len(every)
  assert not set(kept) & set(held)
  assert sorted(np.concatenate([kept, held])) == sorted(every)
  assert 0.1 < len(set(held)) / len(set(every)) < 0.4
  expected = in_holdout(tf.constant(every), 0.25).numpy()
  assert set(held) == set(every[expected])


def test_holdout_rejects_a_bad_fraction(prepared):
  spec, _ = load_feature_spec(prepared)
  with pytest.raises(ValueError, match="holdout_fraction"):
    make_dataset(prepared, "train", spec, holdout="only", holdout_fraction=1.0)
  with pytest.raises(ValueError, match="holdout must be one of"):
    make_dataset(prepared, "train", spec, holdout="validation")


def _write_metadata(directory, version):
  metadata = {"version": version, "feature_spec": {
      "user_features": [], "item_features": [
          {"name": "item_id", "vocab_size": 3, "embedding_dim": 4}],
      "max_history": 5}}
  (directory / "vocab").mkdir()
  (directory / "vocab" / "item_id.tsv").write_text(
      "index\tid\tcount\n0\t<pad>\t0\n1\t<oov>\t0\n2\tx\t4\n")
  (directory / schema.METADATA_FILE).write_text(json.dumps(metadata))
  (directory / schema.SUCCESS_FILE).write_text("")


def test_current_version_loads(tmp_path):
  _write_metadata(tmp_path, schema.SCHEMA_VERSION)
  spec, metadata = load_feature_spec(str(tmp_path))
  assert metadata["version"] == schema.SCHEMA_VERSION
  assert spec.item_features[0].frequencies.tolist() == [0, 0, 4]


def test_other_version_is_refused_naming_both_versions(tmp_path):
  _write_metadata(tmp_path, schema.SCHEMA_VERSION + 1)
  message = (f"has data schema version {schema.SCHEMA_VERSION + 1}, but this "
             f"tfrs_din reads version {schema.SCHEMA_VERSION}")
  with pytest.raises(ValueError, match=message):
    load_metadata(str(tmp_path))
  with pytest.raises(ValueError, match=message):
    load_feature_spec(str(tmp_path))


@pytest.fixture(scope="module")
def next_item(tmp_path_factory):
  return prepared_log(tmp_path_factory.mktemp("last"),
                      SyntheticConfig(num_users=60, max_steps=25, seed=4),
                      "--protocol", "next_item", "--max_history", "6",
                      "--embedding_dim", "4", "--num_shards", "3")


def test_last_target_holdout_is_each_users_target_before_the_test_one(
    next_item):
  """Held out: b_{n-1}, whose positive is the last behaviour of the user's
  test history (the test sample predicts b_n from b_1..b_{n-1})."""
  spec, _ = load_feature_spec(next_item)
  names = ("user_id", "item_id", "label", "hist_length", "hist_item_id")
  every = concatenated(make_dataset(next_item, "train", spec, 16), names)
  kept = concatenated(make_dataset(next_item, "train", spec, 16, shuffle=True,
                                   holdout="exclude", holdout_by="last"),
                      names)
  held = concatenated(make_dataset(next_item, "train", spec, 16,
                                   holdout="only", holdout_by="last"), names)
  assert len(kept["user_id"]) + len(held["user_id"]) == len(every["user_id"])
  # One positive and its one sampled negative per user with a train target.
  users = set(every["user_id"])
  assert sorted(held["user_id"]) == sorted(list(users) * 2)
  assert held["label"].sum() == len(users)
  test = concatenated(make_dataset(next_item, "test", spec, 16), names)
  previous = {u: h[n - 1] for u, h, n, y in zip(
      test["user_id"], test["hist_item_id"], test["hist_length"],
      test["label"]) if y == 1}
  positives = held["label"] == 1
  for user, item in zip(held["user_id"][positives],
                        held["item_id"][positives]):
    assert item == previous[user]
  # Every other training record stays in training.
  key = lambda r: list(zip(r["user_id"], r["item_id"], r["label"],
                           r["hist_length"]))
  assert sorted(key(kept) + key(held)) == sorted(key(every))


def test_holdout_by_is_validated(next_item):
  spec, _ = load_feature_spec(next_item)
  with pytest.raises(ValueError, match="holdout_by must be one of"):
    make_dataset(next_item, "train", spec, holdout="only", holdout_by="time")


def _sorted_copy(directory, destination, key):
  """`directory` with its training records rewritten into one file sorted
  by `key` (a feature name), the order a user's own export might have."""
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(directory, destination)
  files = tf.io.gfile.glob(f"{destination}/train/*{schema.TFRECORD_SUFFIX}")
  records = [r.numpy() for r in tf.data.TFRecordDataset(
      files, compression_type="GZIP")]
  value = lambda r: tf.train.Example.FromString(r).features.feature[
      key].int64_list.value[0]
  records.sort(key=value)
  for f in files:
    tf.io.gfile.remove(f)
  options = tf.io.TFRecordOptions(compression_type="GZIP")
  with tf.io.TFRecordWriter(
      f"{destination}/train/part-00000-of-00001{schema.TFRECORD_SUFFIX}",
      options) as writer:
    for r in records:
      writer.write(r)
  return [value(r) for r in records]


def test_the_default_shuffle_draws_every_batch_from_the_whole_split(
    prepared, tmp_path):
  """A file sorted by user would leak its order through a small buffer: the
  first batch would hold only the first users. The default buffer shuffles
  the whole split, so the first batch spans the file, and an epoch still
  holds every record once."""
  sorted_users = np.array(_sorted_copy(prepared, str(tmp_path / "sorted"),
                                       "user_id"))
  spec, _ = load_feature_spec(prepared)
  directory = str(tmp_path / "sorted")
  n = len(sorted_users)
  rank = {u: i for i, u in enumerate(np.unique(sorted_users))}
  position = lambda users: np.array([rank[u] for u in users]) / len(rank)
  # Without length grouping, whose batch shuffle would blur the window.
  windowed = make_dataset(directory, "train", spec, 64, shuffle=True,
                          shuffle_buffer=64, group_by_length=False)
  first = next(iter(windowed))["user_id"].numpy()
  assert position(first).max() < 0.2, "a 64-record window leaks the order"
  for seed in (0, 1):
    whole = make_dataset(directory, "train", spec, 64, shuffle=True,
                         seed=seed)
    users, _ = _examples(whole)
    assert sorted(users) == sorted(sorted_users)
    first = position(users[:64])
    assert first.min() < 0.15 and first.max() > 0.85, (seed, n)
    # Any 64 records of the split: their mean rank is ~0.5 +- 0.04.
    assert abs(first.mean() - 0.5) < 0.15


def test_shuffle_buffer_is_validated(prepared):
  spec, _ = load_feature_spec(prepared)
  for bad in (0, -5, 2.5, True):
    with pytest.raises(ValueError, match="shuffle_buffer"):
      make_dataset(prepared, "train", spec, 32, shuffle=True,
                   shuffle_buffer=bad)
