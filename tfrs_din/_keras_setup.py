"""Makes `tf.keras` resolve to Keras 2 (`tf-keras`), which TFRS 0.7 requires.

TensorFlow >= 2.16 routes `tf.keras` to Keras 3 unless `TF_USE_LEGACY_KERAS`
is set before `tf.keras` is first touched. This module sets it and fails early
with an actionable message when it is too late.

It does not import TensorFlow itself: when TensorFlow is not loaded yet,
setting the variable is enough, and modules that need no TensorFlow (e.g.
`tfrs_din.schema`, imported by Beam workers) stay light.
"""

from __future__ import annotations

import os
import sys

_ENV = "TF_USE_LEGACY_KERAS"
_TRUE = ("1", "true", "True", "TRUE")


def ensure_legacy_keras() -> None:
  """Sets TF_USE_LEGACY_KERAS=1 and checks that `tf.keras` is Keras 2.

  Raises:
    ImportError: if the variable was set to a false value by the user, or if
      TensorFlow already resolved `tf.keras` to Keras 3 in this process.
  """
  value = os.environ.setdefault(_ENV, "1")
  if value not in _TRUE:
    raise ImportError(
        f"tfrs_din needs Keras 2 but {_ENV}={value!r} is set in the environment; "
        f"unset it or set {_ENV}=1 before starting Python."
    )
  tf = sys.modules.get("tensorflow")
  if tf is None:  # TensorFlow will read the variable when it loads tf.keras.
    return
  version_fn = getattr(tf.keras, "version", None)  # Only Keras 3 has it.
  if version_fn is not None and version_fn().startswith("3."):
    raise ImportError(
        "tfrs_din needs tf.keras to be Keras 2 (tf-keras), but TensorFlow already "
        f"loaded Keras {version_fn()} in this process. Import tfrs_din before any "
        "code touches tf.keras, or set the environment variable "
        f"{_ENV}=1 before starting Python (e.g. `export {_ENV}=1`)."
    )
