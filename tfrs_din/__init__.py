"""tfrs-din: DIN and DIEN click-through-rate models for TensorFlow Recommenders.

Importing this package selects Keras 2 (`tf-keras`) for `tf.keras`, as TFRS
requires (see `tfrs_din._keras_setup`), and loads nothing else: the names
below are imported on first use, so `import tfrs_din` is fast and modules
without TensorFlow (`tfrs_din.schema`) stay light.

Namespaces, as in `tfrs.*` and `keras_rs.*`:

  tfrs_din.layers      Dice, PReLU, MLP, LocalActivationUnit, AttentionGRUCell,
                       AGRUCell, AUGRUCell, InterestExtractor, InterestEvolution
  tfrs_din.models      BaseModel, DINModel, DIENModel, CTRModel, FeatureEmbedder
  tfrs_din.metrics     GAUC, gauc, grouped_auc, rela_impr
  tfrs_din.features    FeatureSpec, CategoricalFeature
  tfrs_din.schema      the TFRecord / vocabulary data contract (no TensorFlow)
  tfrs_din.data       tf.data input pipelines, fresh negatives, the generator
  tfrs_din.regularizers MiniBatchAwareL2, the choice of embedding penalty
  tfrs_din.optimizers  LazyAdam (sparse rows, the lazy form of the dense L2)
  tfrs_din.training    TrainConfig, train, evaluate, load_model; strategies
                       (`.distribute`), `tfrs-din run` (`.workflow`)
  tfrs_din.serving     SavedModel export (`tfrs_din.serving.export`)

The tree reads in the order data flows: events -> `beam_jobs` (prepare) ->
`data` -> `models` -> `training` -> `serving`.

and the most used names at the top level (`tfrs_din.DINModel`, ...).
"""

from __future__ import annotations

from tfrs_din._keras_setup import ensure_legacy_keras as _ensure_legacy_keras
from tfrs_din._lazy import lazy_attributes

_ensure_legacy_keras()

__version__ = "0.1.0"

# Top-level name -> module defining it (imported on first access).
_NAMES = {
    "BaseModel": "tfrs_din.models.base_model",
    "CTRModel": "tfrs_din.models.ctr_model",
    "DIENModel": "tfrs_din.models.dien",
    "DINModel": "tfrs_din.models.din",
    "CategoricalFeature": "tfrs_din.features",
    "FeatureSpec": "tfrs_din.features",
    "GAUC": "tfrs_din.metrics.gauc",
    "gauc": "tfrs_din.metrics.gauc",
    "rela_impr": "tfrs_din.metrics.rela_impr",
    "LazyAdam": "tfrs_din.optimizers",
    "MiniBatchAwareL2": "tfrs_din.regularizers",
    "export_saved_model": "tfrs_din.serving.export",
}
_SUBMODULES = ("data", "features", "layers", "metrics", "models", "ops",
               "optimizers", "regularizers", "schema", "serving", "training")

__all__ = sorted(_NAMES) + list(_SUBMODULES) + ["__version__"]

__getattr__, __dir__ = lazy_attributes(__name__, _NAMES, _SUBMODULES)
