"""The training stage: train, evaluate and load models on prepared data.

  config      `TrainConfig`: schedule, optimizer, data and distribution
              options, and the model's constructor options (no TensorFlow)
  trainer     `train`, `evaluate`, `load_model`, `predict_split`, `score`,
              `build_model`: validation-chosen schedule, refit, checkpoints
              (the `tfrs-din train` command)
  distribute  `make_strategy`: a tf.distribute strategy by name
  workflow    prepare -> train -> evaluate -> export (`tfrs-din run`)

The names load on first use, so that `tfrs_din.training.config` (which the
command line reads to build its flags) loads without TensorFlow.

Example:

>>> from tfrs_din.training import TrainConfig
>>> TrainConfig(model="dien", model_options={"gru_units": 24}).options_for("dien")
{'gru_units': 24}
"""

from __future__ import annotations

from tfrs_din._lazy import lazy_attributes

_NAMES = {
    "TrainConfig": "tfrs_din.training.config",
    **{name: "tfrs_din.training.trainer" for name in (
        "build_model", "evaluate", "load_model", "predict_split", "score",
        "train")},
}
_SUBMODULES = ("config", "distribute", "trainer", "workflow")

__all__ = sorted(_NAMES) + list(_SUBMODULES)

__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, _SUBMODULES)
