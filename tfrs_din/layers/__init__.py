"""Keras layers of DIN and DIEN."""

from tfrs_din.layers.activation_unit import LocalActivationUnit
from tfrs_din.layers.attention_gru import (AGRUCell, AttentionGRUCell,
                                           AUGRUCell, InterestEvolution,
                                           masked_scan)
from tfrs_din.layers.dice import Dice
from tfrs_din.layers.interest_extractor import InterestExtractor
from tfrs_din.layers.mlp import MLP, PReLU, make_activation

__all__ = [
    "AGRUCell", "AUGRUCell", "AttentionGRUCell", "Dice", "InterestEvolution",
    "InterestExtractor", "LocalActivationUnit", "MLP", "PReLU", "make_activation",
    "masked_scan",
]
