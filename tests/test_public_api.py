"""`import tfrs_din` reads like TFRS / keras-rs: namespaces, top-level names,
no internals, and a light import."""

import subprocess
import sys

import pytest
import tensorflow as tf

import tfrs_din
from tfrs_din import layers, metrics, models

TOP_LEVEL = ["BaseModel", "CTRModel", "CategoricalFeature", "DIENModel",
             "DINModel", "FeatureSpec", "GAUC", "LazyAdam", "MiniBatchAwareL2",
             "export_saved_model", "gauc", "rela_impr"]
LAYERS = ["AGRUCell", "AUGRUCell", "AttentionGRUCell", "Dice",
          "InterestEvolution", "InterestExtractor", "LocalActivationUnit",
          "MLP", "PReLU"]


def _python(code: str) -> str:
  """The stripped output of `code` run by a fresh interpreter on this one's
  path; fails the test, with its error output, unless it exits with 0."""
  env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3",
         "PYTHONPATH": ":".join(p for p in sys.path if p)}
  result = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.strip()


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_names_are_the_defining_objects(name):
  value = getattr(tfrs_din, name)
  assert name in tfrs_din.__all__
  assert value.__module__.startswith("tfrs_din.")
  assert getattr(sys.modules[value.__module__], name) is value


def test_namespaces_hold_the_same_objects_as_the_top_level():
  assert tfrs_din.models.DINModel is tfrs_din.DINModel is models.DINModel
  assert tfrs_din.metrics.GAUC is tfrs_din.GAUC is metrics.GAUC
  assert tfrs_din.optimizers.LazyAdam is tfrs_din.LazyAdam
  assert (tfrs_din.regularizers.MiniBatchAwareL2
          is tfrs_din.MiniBatchAwareL2)
  assert tfrs_din.features.FeatureSpec is tfrs_din.FeatureSpec
  assert tfrs_din.layers.Dice is layers.Dice


def test_layers_namespace_exports_layers_and_no_internals():
  assert sorted(layers.__all__) == sorted(LAYERS)
  for name in LAYERS:
    assert issubclass(getattr(layers, name), tf.keras.layers.Layer)
  for internal in ("masked_scan", "make_activation", "Packing",
                   "packed_gru_recurrence"):
    assert not hasattr(layers, internal), internal


def test_unknown_attribute_raises_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'Nope'"):
    tfrs_din.Nope  # pylint: disable=pointless-statement


def test_import_loads_no_tensorflow_until_a_name_is_used():
  code = ("import sys, tfrs_din, tfrs_din.schema\n"
          "assert 'tensorflow' not in sys.modules, 'eager TF import'\n"
          "tfrs_din.DINModel\n"
          "import tensorflow as tf, tf_keras\n"
          "assert tf.keras.layers.Dense is tf_keras.layers.Dense\n"
          "print('ok')")
  assert _python(code) == "ok"


@pytest.mark.parametrize("first", ["import tfrs_din.models",
                                   "from tfrs_din.training import train"])
def test_training_namespace_exposes_the_trainer_in_either_import_order(first):
  # training.trainer imports the models, which import tfrs_din.regularizers
  # and tfrs_din.optimizers: both first imports must work (the package loads
  # names lazily).
  code = (f"{first}\n"
          "from tfrs_din import training\n"
          "from tfrs_din.training import trainer, workflow\n"
          "assert training.TrainConfig is trainer.TrainConfig\n"
          "assert training.train is trainer.train\n"
          "assert workflow.train is trainer.train\n"
          "assert set(training.__all__) <= set(dir(training))\n"
          "print('ok')")
  assert _python(code) == "ok"


def test_the_training_namespace_is_short():
  from tfrs_din import training  # pylint: disable=g-import-not-at-top
  assert sorted(training.__all__) == sorted([
      "TrainConfig", "build_model", "evaluate", "load_model", "predict_split",
      "score", "train", "config", "distribute", "trainer", "workflow"])
  for name in training.__all__:
    assert getattr(training, name) is not None
  # Internals and the moved or removed names stay out of the namespace.
  for gone in ("resolve_regularization", "dense_l2_warning", "LazyAdam",
               "zero_held_out_users", "check_data_options", "optimizers",
               "regularization", "validation_split", "DEFAULT_L2"):
    with pytest.raises(AttributeError):
      getattr(training, gone)


def test_regularizers_and_optimizers_are_top_level_modules():
  from tfrs_din import optimizers, regularizers  # pylint: disable=g-import-not-at-top
  assert regularizers.REGULARIZATIONS == ("auto", "l2", "lazy_l2", "mba", None)
  assert regularizers.DENSE_L2_MAX_ROWS == 250_000
  assert regularizers.DEFAULT_L2 == {"l2": 1e-3, "lazy_l2": 1e-3, "mba": 0.01}
  assert optimizers.LazyAdam is tfrs_din.LazyAdam
  assert "optimizers" in tfrs_din.__all__ and "regularizers" in tfrs_din.__all__


def test_the_command_line_parses_without_tensorflow():
  # `tfrs-din --help` and the TrainConfig it fills load no TensorFlow.
  code = ("import sys\n"
          "from tfrs_din import cli\n"
          "from tfrs_din.training import config\n"
          "args = cli.build_parser().parse_args(['train', '--data', 'd', "
          "'--model_dir', 'm', '--model_options', 'gru_units=4'])\n"
          "cli._train_config(args, 'dien').check()\n"
          "assert 'tensorflow' not in sys.modules, 'eager TF import'\n"
          "print('ok')")
  assert _python(code) == "ok"
