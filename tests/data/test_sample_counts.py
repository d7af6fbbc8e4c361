"""Per-sample id counts (`tfrs_din.data.sample_counts`): a hand count over
the training records, and MBA's penalty with them (`mba_counts="samples"`)."""

import collections
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from prepared_log import prepared_log
from tfrs_din import training
from tfrs_din.data.pipeline import load_feature_spec, make_dataset
from tfrs_din.data.sample_counts import count_samples, with_frequencies
from tfrs_din.data.synthetic import SyntheticConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  # next_item: every event is a target once and a behaviour of later samples.
  return prepared_log(tmp_path_factory.mktemp("counts"),
                      SyntheticConfig(num_users=40, max_steps=20,
                                      num_items=60, num_categories=5, seed=6),
                      "--max_history", "6", "--embedding_dim", "4")


def _hand_count(directory, max_history):
  """feature -> Counter(id -> samples holding it), from the raw Examples."""
  counts = collections.defaultdict(collections.Counter)
  files = sorted(glob.glob(os.path.join(directory, "train", "*.tfrecord.gz")))
  for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
    example = tf.train.Example.FromString(record.numpy())
    values = {k: list(v.int64_list.value)
              for k, v in example.features.feature.items()}
    counts["user_id"].update({values["user_id"][0]})
    for name in ("item_id", "category_id"):
      ids = set(values[name]) | set(values["hist_" + name][-max_history:])
      counts[name].update(ids)
  return counts


@pytest.mark.parametrize("max_history", [None, 3])
def test_counts_equal_a_hand_count_of_samples_per_id(prepared, max_history):
  spec, _ = load_feature_spec(prepared, max_history)
  counted = count_samples(prepared, spec, batch_size=37)
  expected = _hand_count(prepared, max_history or 6)
  for feature in spec.user_features + spec.item_features:
    want = np.zeros(feature.vocab_size, np.float32)
    for index, n in expected[feature.name].items():
      want[index] = n
    np.testing.assert_array_equal(counted[feature.name], want, feature.name)
  # Events and samples differ: behaviours count in every later sample.
  item = spec.item_features[0]
  assert (counted["item_id"] > item.frequencies).sum() > 0.5 * item.vocab_size


def _penalty(embedder, features, name, counts):
  """(lambda / 2) sum_{j in batch} ||w_j||^2 / max(n_j, 1), by hand."""
  ids = set(features[name].numpy().tolist())
  if "hist_" + name in features:
    valid = (np.arange(features["hist_" + name].shape[1])[None]
             < features["hist_length"].numpy()[:, None])
    ids |= set(features["hist_" + name].numpy()[valid].tolist())
  table = embedder.tables[name].embeddings.numpy()
  return 0.5 * embedder.l2 * sum(
      float((table[j] ** 2).sum()) / max(counts[j], 1.0) for j in ids)


def test_mba_penalty_uses_the_sample_counts(prepared, tmp_path):
  config = training.TrainConfig(model="base", epochs=1, batch_size=64,
                                mlp_units=(8,), activation="prelu",
                                validation_fraction=0.0, verbose=0,
                                regularization="mba", mba_counts="samples")
  model, _ = training.train(prepared, str(tmp_path / "base"), config)
  spec, _ = load_feature_spec(prepared)
  samples = count_samples(prepared, spec)
  embedder = model.embedder
  for feature in spec.user_features + spec.item_features:
    np.testing.assert_allclose(
        embedder.regularizers[feature.name].inverse_frequency.numpy(),
        1.0 / np.maximum(samples[feature.name], 1.0), rtol=1e-6)
  features = next(iter(make_dataset(prepared, "train", spec, 64,
                                    with_negatives=False)))
  by_samples = float(embedder.penalty(features))
  expected = sum(_penalty(embedder, features, f.name, samples[f.name])
                 for f in spec.user_features + spec.item_features)
  assert by_samples == pytest.approx(expected, rel=1e-5)
  # The same tables scaled by the event counts: a larger penalty (n_j of
  # the history items is smaller counted in events).
  events = {f.name: f.frequencies for f in spec.user_features
            + spec.item_features}
  by_events = sum(_penalty(embedder, features, f.name, events[f.name])
                  for f in spec.user_features + spec.item_features)
  assert by_events > 1.5 * by_samples


def test_with_frequencies_replaces_only_the_named_features(prepared):
  spec, _ = load_feature_spec(prepared)
  ones = np.ones(spec.item_features[0].vocab_size, np.float32)
  replaced = with_frequencies(spec, {"item_id": ones})
  np.testing.assert_array_equal(replaced.item_features[0].frequencies, ones)
  np.testing.assert_array_equal(replaced.item_features[1].frequencies,
                                spec.item_features[1].frequencies)
  assert replaced.to_dict() == spec.to_dict()
