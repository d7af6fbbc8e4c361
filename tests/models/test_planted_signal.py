"""The models learn what the papers claim, on data with a planted signal.

`tfrs_din.data.synthetic` plants users with several interests that drift;
clicks depend on the *current* interest, revealed by the recent behaviours.
Margins observed when these thresholds were last set (GAUC, 2-core CPU,
fixed seeds): Base 0.645, DIN 0.710 (+0.064), DIEN with AUGRU + aux loss
(alpha = 1) 0.7195 (+0.010 over DIN). With every impression labelled the
auxiliary loss gave no reliable gain in exploratory runs (+0.013 and -0.018 on
two seeds at alpha = 0.2); with scarce labels (15% of targets kept), where it
adds the per-step supervision the DIEN paper argues for, it gave
0.6045 -> 0.6299 (+0.025) on a two-seed mean. Thresholds keep about a third
of each margin, as headroom against numerical drift across machines.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.data.synthetic import SyntheticConfig, generate
from tfrs_din.models import BaseModel, DIENModel, DINModel

CONFIG = SyntheticConfig(num_users=1000, min_steps=40, max_steps=80,
                         click_current=0.8, click_other=0.1, click_random=0.02,
                         switch_prob=0.1)
# The interest vector alone carries the history here (no behaviour sum in the
# tower), with the kernel initializer these margins were measured with: the
# tests check the mechanisms (candidate-aware pooling, interest evolution),
# not the library's default tower.
COMMON = dict(mlp_units=(32, 16), activation="prelu", regularization=None,
              kernel_initializer="glorot_uniform")
# DIEN as the paper writes it (the constructor's defaults are the official
# code's): the auxiliary loss's effect is the paper's claim.
# The paper's DIEN: its tower reads the history only through h'_T.
PAPER_DIEN = dict(gru_type="AUGRU", attention_type="bilinear",
                  aux_reduction="step_mean", tower_input_normalization=None,
                  attention_pooling_in_tower=None)


@pytest.fixture(scope="module")
def data():
  return generate(CONFIG)


def _fit_gauc(model, train, test, epochs, seed=1, lr=0.005):
  tf.keras.utils.set_random_seed(seed)
  model.compile(tf.keras.optimizers.Adam(lr))
  model.fit(train, epochs=epochs, verbose=0)
  return model.evaluate(test, return_dict=True, verbose=0)["gauc"]


def _model(cls, spec, seed=1, **kwargs):
  tf.keras.utils.set_random_seed(seed)
  return cls(spec, **COMMON, **kwargs)


@pytest.mark.slow
def test_din_beats_base_and_dien_beats_din(data):
  train = data.dataset("train", 256, shuffle=True)
  test = data.dataset("test", 1024)
  base = _fit_gauc(_model(BaseModel, data.spec), train, test, 3)
  din = _fit_gauc(_model(DINModel, data.spec, attention_units=(16, 8),
                         attention_activation="prelu",
                         behaviour_sum_in_tower=False), train, test, 3)
  dien = _fit_gauc(_model(DIENModel, data.spec, gru_units=16,
                          behaviour_sum_in_tower=False), train, test, 3)
  print(f"GAUC base={base:.4f} din={din:.4f} dien={dien:.4f}")
  assert din > base + 0.02
  assert dien > din + 0.003


@pytest.mark.slow
def test_auxiliary_loss_helps_dien_when_labels_are_scarce(data):
  rng = np.random.default_rng(0)
  keep = (~data.arrays["is_test"]) & (rng.uniform(size=len(data)) < 0.15)
  arrays = {k: v[keep] for k, v in data.arrays.items() if k != "is_test"}
  train = tf.data.Dataset.from_tensor_slices(arrays).shuffle(
      100_000, seed=0).batch(128)
  test = data.dataset("test", 1024)
  scores = {}
  for weight in (0.0, 1.0):
    scores[weight] = np.mean([
        _fit_gauc(_model(DIENModel, data.spec, seed=seed, gru_units=16,
                         aux_loss_weight=weight, behaviour_sum_in_tower=False,
                         **PAPER_DIEN),
                  train, test, 6, seed=seed)
        for seed in (2, 3)])
  print(f"GAUC no-aux={scores[0.0]:.4f} aux={scores[1.0]:.4f}")
  assert scores[1.0] > scores[0.0] + 0.008


STEADY = SyntheticConfig(num_users=600, min_steps=40, max_steps=80,
                         click_current=0.8, click_other=0.1, click_random=0.02,
                         switch_prob=0.1, seed=11)


@pytest.mark.slow
def test_din_with_the_default_options_learns_on_every_seed():
  """One epoch of DIN as `tfrs-din train` builds it (the constructor's
  defaults: paper sizes, Dice, the dense L2, mean behaviour pooling; LazyAdam
  at 1e-3), three seeds: every seed must learn. The floor fails a default
  that leaves a seed barely above chance.
  """
  from tfrs_din import training  # pylint: disable=g-import-not-at-top
  from tfrs_din.training import trainer  # pylint: disable=g-import-not-at-top
  data = generate(STEADY)
  aucs = []
  for seed in (0, 1, 2):
    config = training.TrainConfig(model="din", seed=seed, batch_size=128)
    tf.keras.utils.set_random_seed(seed)
    model = training.build_model(data.spec, config)
    model.compile(trainer.make_optimizer(
        config.optimizer, config.learning_rate, config.adam_epsilon))
    model.fit(data.dataset("train", 128, shuffle=True, seed=seed), epochs=1,
              verbose=0)
    aucs.append(model.evaluate(data.dataset("test", 1024), return_dict=True,
                               verbose=0)["auc"])
  print("DIN test AUC per seed:", np.round(aucs, 4))
  assert min(aucs) > 0.61
