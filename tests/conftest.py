"""Shared test set-up: select Keras 2 before TensorFlow loads, seed everything."""

import os
import random

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tfrs_din  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TF loads)
import tensorflow as tf  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
  random.seed(0)
  np.random.seed(0)
  tf.keras.utils.set_random_seed(0)
  yield
