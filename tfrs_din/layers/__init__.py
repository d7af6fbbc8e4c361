"""Keras layers of DIN and DIEN (`tfrs_din.layers.Dice`, ...).

Internals (`masked_scan`, `Packing`, `make_activation`, ...) stay in their
defining modules (`tfrs_din.layers.attention_gru`, ...).
"""

from tfrs_din.layers.activation_unit import LocalActivationUnit
from tfrs_din.layers.attention_gru import (AGRUCell, AttentionGRUCell,
                                           AUGRUCell, InterestEvolution)
from tfrs_din.layers.dice import Dice
from tfrs_din.layers.interest_extractor import InterestExtractor
from tfrs_din.layers.mlp import MLP, PReLU

__all__ = [
    "AGRUCell", "AUGRUCell", "AttentionGRUCell", "Dice", "InterestEvolution",
    "InterestExtractor", "LocalActivationUnit", "MLP", "PReLU",
]
