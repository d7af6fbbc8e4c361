"""`tfrs-din demo`: the whole job on the built-in synthetic log."""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from beam_jobs.vocabulary import load_vocabularies
from tfrs_din.data.pipeline import make_dataset
from tfrs_din.data.synthetic import SyntheticConfig, generate
from tfrs_din.plots import plot_attention
from tfrs_din.training import TrainConfig, load_model
from tfrs_din.training.workflow import (format_table, prepare,
                                        train_evaluate_export)

DEMO_DATA = SyntheticConfig(num_users=1000, min_steps=40, max_steps=80,
                            click_current=0.8, click_other=0.1,
                            click_random=0.02, switch_prob=0.1, seed=0)
# Sized to finish in a few minutes on a 2-core CPU: small widths, PReLU,
# MBA, and towers without the behaviour sum (on this generator a click
# depends only on the current interest, which the sum blurs).
DEMO_TRAINING = TrainConfig(
    epochs=3, batch_size=256, learning_rate=0.005, embedding_dim=8,
    model_options=dict(mlp_units=(64, 32), activation="prelu",
                       attention_units=(32, 16), gru_units=16,
                       regularization="mba", l2=0.01,
                       behaviour_sum_in_tower=False,
                       **{"din.attention_activation": "prelu"}))


def write_events(path: str, config: SyntheticConfig) -> int:
  """Writes the synthetic impression log as CSV; returns the row count."""
  events = generate(config).events
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(events[0]))
    writer.writeheader()
    writer.writerows(events)
  return len(events)


def attention_figure(model_dir: str, data_dir: str, path: str) -> Optional[str]:
  """DIN attention of one test user's behaviours to candidates of a recent
  interest, an old interest and an unrelated category."""
  model = load_model(model_dir)
  spec = model.spec
  vocab = load_vocabularies(data_dir, ["category_id"])["category_id"]
  categories = ["<pad>", "<oov>"] + vocab.ids  # raw id by vocabulary index
  batch = next(iter(make_dataset(data_dir, "test", spec, 2048,
                                 with_negatives=False)))
  lengths = batch["hist_length"].numpy()
  row = int(np.argmax(lengths))
  n = int(lengths[row])
  hist_items = batch["hist_item_id"].numpy()[row, :n]
  hist_cats = batch["hist_category_id"].numpy()[row, :n]
  recent = int(hist_cats[-1])
  older = [int(c) for c in hist_cats if c != recent and c not in hist_cats[-5:]]
  seen = set(hist_cats.tolist())
  other_rows = np.flatnonzero(~np.isin(batch["category_id"].numpy(), list(seen)))
  candidates = [(int(hist_items[-1]), recent, "recent interest")]
  if older:
    j = int(np.flatnonzero(hist_cats == older[0])[0])
    candidates.append((int(hist_items[j]), older[0], "older interest"))
  if other_rows.size:
    k = int(other_rows[0])
    candidates.append((int(batch["item_id"][k]), int(batch["category_id"][k]),
                       "unrelated"))
  features = {key: value[row:row + 1] for key, value in batch.items()}
  cands = {"item_id": tf.constant([[c[0] for c in candidates]], tf.int64),
           "category_id": tf.constant([[c[1] for c in candidates]], tf.int64)}
  _, intermediates = model.forward(features, cands, training=False)
  weights = intermediates["attention"].numpy()[0, :, :n]
  return plot_attention(
      weights, [categories[c] for c in hist_cats],
      [f"{label} ({categories[c]})" for _, c, label in candidates], path,
      title="DIN attention: one user's behaviours (by category) vs candidates")


def run_demo(output: str = "tfrs-din-demo", epochs: Optional[int] = None,
             data: SyntheticConfig = DEMO_DATA) -> dict:
  """Generates the log, prepares it with Beam, trains base/DIN/DIEN, prints
  the results, plots DIN attention and exports servable models."""
  os.makedirs(output, exist_ok=True)
  events = os.path.join(output, "events.csv")
  count = write_events(events, data)
  print(f"[demo] wrote {count} synthetic impressions to {events}", flush=True)
  data_dir = os.path.join(output, "data")
  prepare(["--events", events, "--output", data_dir, "--protocol", "labeled",
           "--label_column", "label", "--max_history", "30",
           "--test_fraction", "0.2", "--embedding_dim", "8", "--overwrite"])
  training = DEMO_TRAINING if epochs is None else dataclasses.replace(
      DEMO_TRAINING, epochs=epochs)
  results = train_evaluate_export(data_dir, output, ["base", "din", "dien"],
                                  training)
  figure = attention_figure(os.path.join(output, "models", "din"), data_dir,
                            os.path.join(output, "din_attention.png"))
  print("\n" + format_table(results))
  print(f"\n[demo] metrics: {os.path.join(output, 'metrics.json')}")
  print(f"[demo] attention plot: {figure}")
  print(f"[demo] TF Serving exports under {os.path.join(output, 'export')}")
  return results
