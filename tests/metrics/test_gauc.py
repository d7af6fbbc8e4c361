import numpy as np
import pytest
import tensorflow as tf

import reference as ref
from tfrs_din.metrics import GAUC, gauc, rela_impr


def _data(n=600, users=40, seed=0):
  rng = np.random.default_rng(seed)
  u = rng.integers(0, users, n)
  y = (rng.uniform(size=n) < 0.3).astype(np.int64)
  s = np.round(rng.normal(size=n) + y * 0.8, 1)  # rounding creates ties
  return u, y, s


def test_matches_brute_force_per_user_auc_with_ties():
  u, y, s = _data()
  assert gauc(u, y, s) == pytest.approx(ref.gauc(u, y, s), abs=1e-12)


def test_skips_single_class_users_and_weights_by_impressions():
  users = [7, 7, 7, 7, 8, 8, 9]
  labels = [1, 0, 0, 0, 1, 1, 0]
  scores = [0.2, 0.1, 0.3, 0.0, 0.5, 0.4, 0.9]
  assert gauc(users, labels, scores) == pytest.approx(2 / 3)  # only user 7


def test_streaming_over_batches_equals_one_shot():
  u, y, s = _data(seed=1)
  metric = GAUC()
  for start in range(0, len(u), 64):  # users span batches
    metric.update_state(u[start:start + 64], y[start:start + 64],
                        s[start:start + 64])
  assert float(metric.result()) == pytest.approx(gauc(u, y, s), abs=1e-9)
  metric.reset_state()
  assert np.isnan(float(metric.result()))


def test_streaming_inside_tf_function():
  u, y, s = _data(seed=2)
  metric = GAUC()

  @tf.function
  def update(a, b, c):
    metric.update_state(a, b, c)

  for start in range(0, len(u), 100):
    update(u[start:start + 100], y[start:start + 100], s[start:start + 100])
  assert float(metric.result()) == pytest.approx(ref.gauc(u, y, s), abs=1e-9)


def test_rela_impr():
  assert rela_impr(0.8818, 0.8624) == pytest.approx(
      ((0.8818 - 0.5) / (0.8624 - 0.5) - 1) * 100)
  with pytest.raises(ValueError, match="0.5"):
    rela_impr(0.7, 0.5)
