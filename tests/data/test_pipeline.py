"""The user holdout that makes a validation split out of the training users."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.data.pipeline import in_holdout, make_dataset
from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.workflow import prepare
from tfrs_din.demo import write_events
from tfrs_din.data.pipeline import load_feature_spec


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
  root = tmp_path_factory.mktemp("holdout")
  events = str(root / "events.csv")
  write_events(events, SyntheticConfig(num_users=80, max_steps=20, seed=2))
  out = str(root / "data")
  prepare(["--events", events, "--output", out, "--max_history", "6",
           "--embedding_dim", "4"])
  return out


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
