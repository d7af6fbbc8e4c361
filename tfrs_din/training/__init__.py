"""The training stage: train, evaluate and load models on prepared data.

The package tree reads in the order data flows:
events -> `beam_jobs` (prepare) -> `tfrs_din.data` -> `tfrs_din.models` ->
`tfrs_din.training` -> `tfrs_din.serving`. This subpackage holds:

  trainer         `TrainConfig`, `train`, `evaluate`, `load_model`,
                  `predict_split`, `score`: validation-chosen schedule,
                  refit, checkpoints (the `tfrs-din train` command)
  distribute      `make_strategy`: tf.distribute strategy by name
  optimizers      `LazyAdam`: Adam that updates only the embedding rows a
                  batch touched, with the lazy form of a dense L2
                  (`row_l2`, `adam_l2_shrink`)
  regularization  `MiniBatchAwareL2`: the DIN paper's mini-batch aware L2
  workflow        prepare -> train -> evaluate -> export (`tfrs-din run`)

The names of `trainer` are importable from here (`from tfrs_din.training
import TrainConfig, train`). They load on first use (PEP 562), as the
package root does: `tfrs_din.models` imports `regularization` from here, and
`trainer` imports the models, so an eager import would be circular.

Example:

>>> from tfrs_din.training import TrainConfig
>>> TrainConfig(model="dien").gru_type
'AUGRU_OFFICIAL'
"""

from __future__ import annotations

from tfrs_din._lazy import lazy_attributes

_TRAINER_NAMES = (
    "AUX_NEGATIVES", "CONFIG_FILE", "DEFAULT_L2", "DENSE_L2_WARN_ROWS",
    "MBA_COUNTS", "MODEL_FILE", "MONITORS", "SELECTION_FILE", "VALIDATIONS",
    "TrainConfig", "build_model", "check_data_options", "dense_l2_warning",
    "evaluate", "l2_strength", "load_model", "make_optimizer",
    "predict_split", "resolve_regularization", "score", "train",
    "validation_split",
    "zero_held_out_users")
_SUBMODULES = ("distribute", "optimizers", "regularization", "trainer",
               "workflow")

__all__ = list(_TRAINER_NAMES) + list(_SUBMODULES)

__getattr__, __dir__ = lazy_attributes(
    __name__, {n: f"{__name__}.trainer" for n in _TRAINER_NAMES}, _SUBMODULES)
