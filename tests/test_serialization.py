"""Every public layer, FeatureEmbedder, MiniBatchAwareL2, GAUC and LazyAdam
round-trips through its config (by registered name), and every layer through
a `.keras` file with identical outputs."""

import json
from typing import Callable, Dict, NamedTuple, Optional

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din import layers
from tfrs_din.features import CategoricalFeature, FeatureSpec
from tfrs_din.metrics import GAUC
from tfrs_din.models import FeatureEmbedder
from tfrs_din.optimizers import LazyAdam
from tfrs_din.regularizers import MiniBatchAwareL2

const = tf.keras.initializers.Constant
rng = np.random.default_rng(0)
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)


class Case(NamedTuple):
  make: Callable[[], object]
  # Functional-model inputs (name -> array) and how the layer is called on
  # them; None for objects that are not model-building layers.
  inputs: Optional[Dict[str, np.ndarray]] = None
  apply: Optional[Callable] = None


def _seq(width, steps=5):
  return rng.normal(size=(2, steps, width)).astype(np.float32)


def _rnn(cell_factory):
  return Case(cell_factory, {"x": _seq(4)},
              lambda layer, t: tf.keras.layers.RNN(layer)(t["x"]))


CASES = {
    "Dice": Case(lambda: layers.Dice(epsilon=1e-6, alpha_initializer=const(0.2)),
                 {"x": rng.normal(size=(2, 3)).astype(np.float32)},
                 lambda layer, t: layer(t["x"])),
    "PReLU": Case(lambda: layers.PReLU(alpha_initializer=0.1),
                  {"x": rng.normal(size=(2, 3)).astype(np.float32)},
                  lambda layer, t: layer(t["x"])),
    "MLP": Case(lambda: layers.MLP(
        (4,), activation="dice", batch_norm=True, output_units=2,
        kernel_regularizer=tf.keras.regularizers.L2(0.1),
        kernel_initializer="he_normal", bias_initializer=const(0.1)),
                {"x": rng.normal(size=(2, 3)).astype(np.float32)},
                lambda layer, t: layer(t["x"])),
    "LocalActivationUnit": Case(
        lambda: layers.LocalActivationUnit(
            (4, 2), activation="dice", normalization="softmax",
            bias_initializer=const(0.05)),
        {"query": rng.normal(size=(2, 3)).astype(np.float32),
         "keys": _seq(3), "mask": MASK},
        lambda layer, t: layer(t["query"], t["keys"], mask=t["mask"])),
    "AttentionGRUCell": _rnn(lambda: layers.AttentionGRUCell(
        3, recurrent_initializer="glorot_uniform", bias_initializer=const(0.1))),
    "AGRUCell": _rnn(lambda: layers.AGRUCell(3)),
    "AUGRUCell": _rnn(lambda: layers.AUGRUCell(3)),
    "InterestEvolution": Case(
        lambda: layers.InterestEvolution(4, "AGRU",
                                         kernel_initializer="he_uniform"),
        {"states": _seq(3), "attention": rng.uniform(size=(2, 5)).astype(
            np.float32), "mask": MASK},
        lambda layer, t: layer(t["states"], t["attention"], t["mask"])),
    "InterestExtractor": Case(
        lambda: layers.InterestExtractor(4, aux_hidden_units=(3,),
                                         bias_initializer=const(0.1)),
        {"behaviours": _seq(3), "mask": MASK},
        lambda layer, t: layer(t["behaviours"], mask=t["mask"])),
    "FeatureEmbedder": Case(lambda: FeatureEmbedder(
        FeatureSpec([CategoricalFeature("user_id", 5, 2)],
                    [CategoricalFeature("item_id", 7, 3)], max_history=4),
        regularization="mba", l2=0.5,
        embeddings_initializer=tf.keras.initializers.RandomUniform(-1, 1))),
    "MiniBatchAwareL2": Case(lambda: MiniBatchAwareL2(l2=0.2, vocab_size=6)),
    "GAUC": Case(lambda: GAUC(name="user_gauc")),
    "LazyAdam": Case(lambda: LazyAdam(learning_rate=0.05, beta_1=0.8)),
}


def _json(config: dict) -> dict:
  """The config as a `.keras` file stores it (tuples become lists, NumPy
  scalars numbers)."""
  return json.loads(json.dumps(config, default=lambda value: value.item()))


def test_every_public_layer_has_a_case():
  assert set(layers.__all__) <= set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trip_by_registered_name(name):
  obj = CASES[name].make()
  config = obj.get_config()
  serialized = tf.keras.saving.serialize_keras_object(obj)
  assert serialized["registered_name"] == f"tfrs_din>{type(obj).__name__}"
  restored = tf.keras.saving.deserialize_keras_object(_json(serialized))
  assert type(restored) is type(obj)
  assert _json(restored.get_config()) == _json(config)
  # Non-default constructor arguments survive (not only the defaults).
  assert _json(type(obj).from_config(_json(config)).get_config()) == _json(
      config)


def test_initializers_in_config_are_the_ones_used():
  mlp = layers.MLP((2,), activation="relu", bias_initializer=const(0.5))
  mlp(tf.zeros([1, 3]))
  restored = layers.MLP.from_config(_json(mlp.get_config()))
  restored(tf.zeros([1, 3]))
  np.testing.assert_array_equal(restored.weights[1], [0.5, 0.5])
  cell = layers.AttentionGRUCell(2, bias_initializer=const(0.25))
  cell.build([None, 3])
  np.testing.assert_array_equal(cell.recurrent_bias, np.full([6], 0.25))


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items()
                                        if c.inputs is not None))
def test_keras_file_save_and_load_gives_identical_outputs(name, tmp_path):
  case = CASES[name]
  inputs = {k: tf.keras.Input(v.shape[1:], dtype=tf.as_dtype(v.dtype), name=k)
            for k, v in case.inputs.items()}
  model = tf.keras.Model(inputs, case.apply(case.make(), inputs))
  expected = model(case.inputs, training=False)
  path = str(tmp_path / f"{name}.keras")
  model.save(path)
  loaded = tf.keras.models.load_model(path)
  assert len(loaded.weights) == len(model.weights) > 0
  np.testing.assert_array_equal(loaded(case.inputs, training=False), expected)
