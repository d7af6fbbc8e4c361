"""tfrs-din: DIN and DIEN click-through-rate models for TensorFlow Recommenders.

Importing this package selects Keras 2 (`tf-keras`) for `tf.keras`, as TFRS
requires; see `tfrs_din._keras_setup`.
"""

from tfrs_din._keras_setup import ensure_legacy_keras as _ensure_legacy_keras

_ensure_legacy_keras()

__version__ = "0.1.0"
