"""Fresh auxiliary negatives (`tfrs_din.data.negatives`): never an item of
the row, never padding or OOV, padding kept, side features from the item
table, the count ** power distribution, new draws every epoch that a seed
reproduces, and DIEN training with them."""

import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from batch_arrays import concatenated
from beam_jobs.vocabulary import load_vocabularies
from prepared_log import prepared_log
from tfrs_din import training
from tfrs_din.data.negatives import (ITEM_TABLE_FILE, FreshNegatives,
                                     load_item_features)
from tfrs_din.data.pipeline import load_feature_spec, make_dataset
from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.schema import FIRST_INDEX, OOV_INDEX, PADDING_INDEX

# A catalogue of 10 real items (indices 2..11), counts decreasing as in a
# vocabulary, categories 2..4 by item.
COUNTS = np.array([0, 3, 40, 30, 20, 15, 10, 8, 5, 3, 2, 1], np.float64)
CATEGORY = np.array([0, 1, 2, 3, 4, 2, 3, 4, 2, 3, 4, 2], np.int64)
TABLE = np.stack([np.arange(12), CATEGORY], axis=1)
NAMES = ["item_id", "category_id"]


def _sampler(power=1.0, max_tries=8):
  return FreshNegatives(TABLE, COUNTS, NAMES, power, max_tries, "user_id")


def _batch(history, candidates, users=None):
  """Padded features of rows of histories (lists of item indices)."""
  width = max(len(h) for h in history)
  padded = [h + [PADDING_INDEX] * (width - len(h)) for h in history]
  return {
      "user_id": tf.constant(users or list(range(2, 2 + len(history))),
                             tf.int64),
      "item_id": tf.constant(candidates, tf.int64),
      "hist_item_id": tf.constant(padded, tf.int64),
      "hist_category_id": tf.constant(CATEGORY[np.array(padded)], tf.int64),
      "hist_length": tf.constant([len(h) for h in history], tf.int64),
  }


def _check_rows(features, negatives):
  """Every assertion that holds for any batch, with prepared or toy data."""
  history = np.asarray(features["hist_item_id"])
  candidate = np.asarray(features["item_id"])
  valid = (np.arange(history.shape[1])[None]
           < np.asarray(features["hist_length"])[:, None])
  neg = np.asarray(negatives)
  assert (neg[~valid] == PADDING_INDEX).all()
  assert (neg[valid] >= FIRST_INDEX).all()  # never padding or OOV
  for row in range(len(neg)):
    banned = set(history[row][valid[row]]) | {candidate[row]}
    assert not banned & set(neg[row][valid[row]]), row


def test_negatives_avoid_the_row_keep_padding_and_follow_the_item_table():
  features = _batch([[2, 3, 4], [5], [2, 3, 4, 5, 6, 7], [11, 10]],
                    [8, 2, 9, 3])
  out = _sampler().sample(features, tf.constant([1, 2], tf.int64))
  _check_rows(features, out["neg_hist_item_id"])
  np.testing.assert_array_equal(out["neg_hist_category_id"].numpy(),
                                CATEGORY[out["neg_hist_item_id"].numpy()])
  for name in features:  # the other features pass through unchanged
    np.testing.assert_array_equal(out[name], features[name])


def test_same_key_same_negatives_other_key_other_negatives():
  features = _batch([[2, 3, 4, 5, 6, 7, 8]] * 20, [9] * 20)
  sampler = _sampler()
  first = sampler.sample(features, tf.constant([7, 0], tf.int64))
  again = sampler.sample(features, tf.constant([7, 0], tf.int64))
  other = sampler.sample(features, tf.constant([8, 0], tf.int64))
  np.testing.assert_array_equal(first["neg_hist_item_id"],
                                again["neg_hist_item_id"])
  assert (first["neg_hist_item_id"].numpy()
          != other["neg_hist_item_id"].numpy()).any()


def _chi_square_threshold(dof, z=3.719):  # P(chi2 > threshold) ~ 1e-4
  # Wilson-Hilferty: (chi2 / k) ** (1/3) is about normal.
  return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.mark.parametrize("power", [1.0, 0.0, 0.5])
def test_draws_follow_count_to_the_power_outside_the_row(power):
  # Every row holds item 3 only: negatives follow count ** power over the
  # other items (the distribution conditioned on leaving the row out).
  rows, length = 400, 50
  features = _batch([[3] * length] * rows, [3] * rows)
  neg = _sampler(power).sample(features, tf.constant([3, 4], tf.int64))
  draws = neg["neg_hist_item_id"].numpy().ravel()
  observed = np.bincount(draws, minlength=len(COUNTS))
  weights = COUNTS ** power
  weights[:FIRST_INDEX] = 0
  weights[3] = 0
  expected = draws.size * weights / weights.sum()
  assert observed[:FIRST_INDEX].sum() == 0 and observed[3] == 0
  keep = expected > 0
  chi2 = (((observed[keep] - expected[keep]) ** 2) / expected[keep]).sum()
  assert chi2 < _chi_square_threshold(keep.sum() - 1), (observed, expected)


def test_after_max_tries_the_most_frequent_item_outside_the_row_is_taken():
  # The row holds 9 of the 10 items (all but 7): one try rarely lands on 7,
  # and the fallback gives 7 (the most frequent, and only, item left).
  row = [2, 3, 4, 5, 6, 8, 9, 10, 11]
  features = _batch([row] * 30, [2] * 30)
  neg = _sampler(max_tries=1).sample(features, tf.constant([5, 6], tf.int64))
  assert (neg["neg_hist_item_id"].numpy() == 7).all()
  # With room left, the fallback is the most frequent item outside the row.
  features = _batch([[2, 3, 5]] * 200, [2] * 200)
  sampler = FreshNegatives(TABLE, COUNTS, NAMES, 1.0, max_tries=1)
  neg = sampler.sample(features, tf.constant([1, 1], tf.int64))
  _check_rows(features, neg["neg_hist_item_id"])
  # Row covering the whole catalogue: no valid item; a draw, never padding.
  features = _batch([list(range(2, 12))], [2])
  neg = _sampler().sample(features, tf.constant([1, 1], tf.int64))
  assert (neg["neg_hist_item_id"].numpy() >= FIRST_INDEX).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(power=-1.0), "aux_negative_power must be a finite number >= 0"),
    (dict(power=float("nan")), "aux_negative_power"),
    (dict(max_tries=0), "max_tries must be >= 1"),
])
def test_bad_options_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _sampler(**kwargs)


# A prepared log -------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return prepared_log(tmp_path_factory.mktemp("negatives"),
                      SyntheticConfig(num_users=60, max_steps=20,
                                      num_items=80, num_categories=6, seed=3),
                      "--max_history", "6", "--embedding_dim", "4")


def test_prepared_log_side_features_are_the_item_tables_rows(prepared):
  spec, _ = load_feature_spec(prepared)
  vocabs = load_vocabularies(prepared, ["item_id", "category_id"])
  with open(os.path.join(prepared, ITEM_TABLE_FILE)) as f:
    raw = dict(line.split("\t") for line in f.read().splitlines()[1:])
  category = {vocabs["item_id"].index(item): vocabs["category_id"].index(c)
              for item, c in raw.items()}
  table = load_item_features(prepared, spec)
  assert table.shape == (spec.item_features[0].vocab_size, 2)
  assert table[PADDING_INDEX].tolist() == [PADDING_INDEX] * 2
  assert table[OOV_INDEX].tolist() == [OOV_INDEX] * 2
  for index, cat in category.items():
    assert table[index].tolist() == [index, cat]
  sampler = FreshNegatives.from_prepared(prepared, spec)
  batch = next(iter(make_dataset(prepared, "train", spec, 64,
                                 fresh_negatives=sampler)))
  _check_rows(batch, batch["neg_hist_item_id"])
  for item, cat in zip(batch["neg_hist_item_id"].numpy().ravel(),
                       batch["neg_hist_category_id"].numpy().ravel()):
    assert cat == (PADDING_INDEX if item == PADDING_INDEX else category[item])


def test_every_epoch_draws_anew_and_the_seed_reproduces_them(prepared):
  spec, _ = load_feature_spec(prepared)
  sampler = FreshNegatives.from_prepared(prepared, spec, power=1.0)

  def dataset(seed, **kwargs):
    return make_dataset(prepared, "train", spec, 32, shuffle=True, seed=seed,
                        fresh_negatives=sampler, **kwargs)

  ds = dataset(seed=0)
  epoch1, epoch2 = concatenated(ds), concatenated(ds)
  _check_rows(epoch1, epoch1["neg_hist_item_id"])
  _check_rows(epoch2, epoch2["neg_hist_item_id"])
  valid = epoch1["neg_hist_item_id"] != PADDING_INDEX
  # Same examples in another order: compare the negatives of each example.
  def by_example(epoch):
    keys = [tuple(r) for r in np.column_stack(
        [epoch["user_id"], epoch["item_id"], epoch["label"],
         epoch["hist_item_id"]])]
    return dict(zip(keys, map(tuple, epoch["neg_hist_item_id"])))
  first, second = by_example(epoch1), by_example(epoch2)
  assert first.keys() == second.keys()
  changed = np.mean([first[k] != second[k] for k in first])
  assert changed > 0.5 and valid.any()
  # A new dataset with the same seed (and the same global seed, set by
  # conftest before `ds` was made) repeats epoch 1, order and negatives.
  tf.keras.utils.set_random_seed(0)
  again = concatenated(dataset(seed=0))
  for name in epoch1:
    np.testing.assert_array_equal(again[name], epoch1[name])
  tf.keras.utils.set_random_seed(0)
  other = by_example(concatenated(dataset(seed=1)))
  assert np.mean([other[k] != first[k] for k in first]) > 0.5


@pytest.mark.parametrize("holdout_by", ["users", "last"])
def test_holdout_batches_get_fresh_negatives(prepared, holdout_by):
  spec, _ = load_feature_spec(prepared)
  sampler = FreshNegatives.from_prepared(prepared, spec)
  holdout = dict(holdout_fraction=0.3, holdout_by=holdout_by)
  kept = concatenated(make_dataset(prepared, "train", spec, 32,
                                   holdout="exclude", fresh_negatives=sampler,
                                   **holdout))
  held = concatenated(make_dataset(prepared, "train", spec, 32,
                                   holdout="only", **holdout))
  every = concatenated(make_dataset(prepared, "train", spec, 32))
  assert len(kept["user_id"]) + len(held["user_id"]) == len(every["user_id"])
  if holdout_by == "users":
    assert not set(kept["user_id"]) & set(held["user_id"])
  _check_rows(kept, kept["neg_hist_item_id"])


def test_a_directory_without_item_table_is_refused_naming_the_file(
    prepared, tmp_path):
  data = str(tmp_path / "old")
  shutil.copytree(prepared, data)
  os.remove(os.path.join(data, ITEM_TABLE_FILE))
  spec, _ = load_feature_spec(data)
  with pytest.raises(FileNotFoundError, match="item_table.tsv"):
    FreshNegatives.from_prepared(data, spec)
  config = training.TrainConfig(model="dien", aux_negatives="fresh",
                                epochs=1, verbose=0)
  with pytest.raises(FileNotFoundError, match="item_table.tsv"):
    training.train(data, str(tmp_path / "model"), config)


SMALL = dict(batch_size=64, verbose=0, epochs=2, validation_fraction=0.2,
             refit=False, model_options=dict(mlp_units=(8, 4), gru_units=4,
                                             activation="prelu"))


def test_dien_trains_with_fresh_negatives_even_without_prepared_ones(
    tmp_path):
  data = prepared_log(tmp_path, SyntheticConfig(num_users=60, max_steps=20,
                                                num_items=80, num_categories=6,
                                                seed=5),
                      "--max_history", "6", "--embedding_dim", "4",
                      "--no_aux_negatives")
  prepared_only = training.TrainConfig(model="dien", aux_negatives="prepared",
                                        **SMALL)
  with pytest.raises(ValueError, match="--aux_negatives fresh"):
    training.train(data, str(tmp_path / "refused"), prepared_only)
  config = training.TrainConfig(model="dien", aux_negatives="fresh",
                                aux_negative_power=0.75, **SMALL)
  model, logs = training.train(data, str(tmp_path / "dien"), config)
  assert len(logs["loss"]) >= 1 and np.isfinite(logs["loss"]).all()
  assert all(a > 0 for a in logs["aux_loss"])  # the negatives reached the loss
