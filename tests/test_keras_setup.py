"""`import tfrs_din` selects Keras 2, or says exactly what to do."""

import os
import subprocess
import sys

import pytest


def _run(code: str, **env_overrides):
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env.update(env_overrides)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return subprocess.run([sys.executable, "-c", code], env=env,
                        capture_output=True, text=True, timeout=300)


def test_import_selects_keras_2_for_a_user_who_never_set_the_variable():
  result = _run(
      "import tfrs_din, tensorflow as tf, tensorflow_recommenders as tfrs\n"
      "import tf_keras\n"
      "assert tf.keras.layers.Dense is tf_keras.layers.Dense\n"
      "print('ok', tfrs.__version__)")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "ok v0.7.7" in result.stdout


def test_import_after_keras_3_was_loaded_raises_actionable_error():
  result = _run("import tensorflow as tf\n"
                "tf.keras.layers.Dense\n"
                "import tfrs_din")
  assert result.returncode != 0
  assert "ImportError" in result.stderr
  assert "TF_USE_LEGACY_KERAS=1" in result.stderr
  assert "Import tfrs_din before" in result.stderr


@pytest.mark.parametrize("value", ["0", "false"])
def test_explicitly_disabled_legacy_keras_is_refused(value):
  result = _run("import tfrs_din", TF_USE_LEGACY_KERAS=value)
  assert result.returncode != 0
  assert f"TF_USE_LEGACY_KERAS={value!r}" in result.stderr
