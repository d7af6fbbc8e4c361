"""TFRS ranking models: the Embedding&MLP base model, DIN and DIEN."""

from tfrs_din.models.base_model import BaseModel
from tfrs_din.models.ctr_model import CTRModel
from tfrs_din.models.din import DINModel
from tfrs_din.models.dien import DIENModel
from tfrs_din.models.embedding import EmbeddedFeatures, FeatureEmbedder

MODELS = {"base": BaseModel, "din": DINModel, "dien": DIENModel}

__all__ = ["BaseModel", "CTRModel", "DIENModel", "DINModel",
           "EmbeddedFeatures", "FeatureEmbedder", "MODELS"]
