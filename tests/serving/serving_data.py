"""A tiny hand-made `beam_jobs.prepare` output and an independent reference
of the raw id -> index mapping the export must reproduce."""

import json
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf

from beam_jobs.vocabulary import Vocabulary
from tfrs_din.features import FeatureSpec

MAX_HISTORY = 4
USERS = ["101", "102", "103"]
ITEMS = ["5001", "5002", "5003", "5004", "5005"]
CATEGORIES = ["books", "toys", "food"]
# 5006 is in the item table but not the item vocabulary (below min_count):
# OOV item id, known category. 5007's category is not in the vocabulary.
ITEM_TABLE = {"5001": "books", "5002": "toys", "5003": "books",
              "5004": "food", "5005": "toys", "5006": "food",
              "5007": "garden"}


def write_prepared(directory: str, users: List[str] = USERS,
                   items: List[str] = ITEMS, categories: List[str] = CATEGORIES,
                   item_table: Dict[str, str] = ITEM_TABLE) -> FeatureSpec:
  """Writes metadata.json, vocab/*.tsv and item_table.tsv; returns the spec.

  By default the vocabularies above; others give other ids (vocabulary
  order: index 2 is the first id).
  """
  vocabs = {"user_id": users, "item_id": items, "category_id": categories}
  os.makedirs(os.path.join(directory, "vocab"), exist_ok=True)
  for name, ids in vocabs.items():
    vocab = Vocabulary(name, ids, list(range(len(ids) + 5, 5, -1)))
    with open(os.path.join(directory, "vocab", f"{name}.tsv"), "w") as f:
      f.write(vocab.to_tsv())
  with open(os.path.join(directory, "item_table.tsv"), "w") as f:
    f.write("item_id\tcategory_id\n" + "".join(
        f"{k}\t{v}\n" for k, v in sorted(item_table.items())))
  spec = {"user_features": [{"name": "user_id", "vocab_size": 2 + len(users),
                             "embedding_dim": 4}],
          "item_features": [{"name": "item_id", "vocab_size": 2 + len(items),
                             "embedding_dim": 4},
                            {"name": "category_id",
                             "vocab_size": 2 + len(categories),
                             "embedding_dim": 4}],
          "max_history": MAX_HISTORY, "numeric_features": [],
          "label": "label", "group_key": "user_id"}
  with open(os.path.join(directory, "metadata.json"), "w") as f:
    json.dump({"version": 1, "feature_spec": spec}, f)
  return FeatureSpec.from_dict(spec)


def _index(ids: List[str], raw: str) -> int:
  if raw == "":
    return 0
  return ids.index(raw) + 2 if raw in ids else 1


def item_indices(raw: str) -> Dict[str, int]:
  """Reference: item id and category indices of a raw item id."""
  category = ITEM_TABLE.get(raw)
  return {"item_id": _index(ITEMS, raw),
          "category_id": (0 if raw == "" else 1 if category is None
                          else _index(CATEGORIES, category))}


def index_features(users: List[str], histories: List[List[str]],
                   items: List[str]) -> Dict[str, tf.Tensor]:
  """Reference index features of raw rows (padding "" dropped, most recent
  MAX_HISTORY behaviours kept)."""
  out = {"user_id": [_index(USERS, u) for u in users], "item_id": [],
         "category_id": [], "hist_item_id": [], "hist_category_id": [],
         "hist_length": []}
  for history, item in zip(histories, items):
    kept = [h for h in history if h][-MAX_HISTORY:]
    pad = [""] * (MAX_HISTORY - len(kept))
    rows = [item_indices(h) for h in kept + pad]
    out["hist_item_id"].append([r["item_id"] for r in rows])
    out["hist_category_id"].append([r["category_id"] for r in rows])
    out["hist_length"].append(len(kept))
    for k, v in item_indices(item).items():
      out[k].append(v)
  return {k: tf.constant(np.asarray(v, np.int64)) for k, v in out.items()}
