"""A seeded synthetic CTR log with planted, drifting multi-interest structure.

Each user holds a few interests (item categories). At every step one of them
is *current*; the user switches between interests now and then and
occasionally replaces an interest by a new one (interests drift). At each
step an item is shown: from the current interest, from another of the
user's interests, or from anywhere. The click probability is high when the
shown item's category is the current interest, lower for the user's other
interests and low otherwise. Clicked items become behaviours.

So a click depends on how the candidate relates to the user's *recent*
behaviours (which reveal the current interest), not to their average:
sum pooling cannot tell which categories the user likes (BaseModel is weak),
candidate-aware pooling can (DIN), and only an order-aware model can tell the
current interest from older ones (DIEN).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List, Optional

import numpy as np
import tensorflow as tf

from tfrs_din.features import (HISTORY_LENGTH, OOV_INDEX, CategoricalFeature,
                               FeatureSpec)
from tfrs_din.schema import TFRECORD_SUFFIX

FIRST_ID = OOV_INDEX + 1  # ids below are padding and OOV


@dataclasses.dataclass
class SyntheticConfig:
  """Knobs of the generator (the defaults run in seconds).

  Args:
    num_users, num_items, num_categories: sizes of the world.
    interests_per_user: interests a user holds at once.
    min_steps, max_steps: impressions per user.
    switch_prob: chance per step that the current interest changes.
    renew_prob: chance per step that a non-current interest is replaced.
    show_current, show_other: probability that the shown item comes from the
      current interest / another interest of the user (else: anywhere).
    click_current, click_other, click_random: click probabilities.
    max_history: behaviours kept per sample.
    test_fraction: fraction of users whose samples form the test split.
    embedding_dim: embedding width written into the spec.
    seed: seeds everything.
  """
  num_users: int = 2000
  num_items: int = 1000
  num_categories: int = 40
  interests_per_user: int = 3
  min_steps: int = 20
  max_steps: int = 40
  switch_prob: float = 0.12
  renew_prob: float = 0.03
  show_current: float = 0.35
  show_other: float = 0.35
  click_current: float = 0.75
  click_other: float = 0.15
  click_random: float = 0.05
  max_history: int = 30
  test_fraction: float = 0.2
  embedding_dim: int = 8
  seed: int = 0


@dataclasses.dataclass
class SyntheticData:
  """Samples (one per impression with at least one earlier click) and the log.

  `arrays` holds model features keyed as in `FeatureSpec` (ids are vocabulary
  indices), the label, `is_test`, and DIEN's auxiliary negatives. `events`
  is the raw impression log, one dict per impression.
  """
  spec: FeatureSpec
  arrays: Dict[str, np.ndarray]
  events: List[dict]

  def __len__(self) -> int:
    return len(self.arrays["label"])

  def features(self, index=slice(None)) -> Dict[str, tf.Tensor]:
    return {k: tf.constant(v[index]) for k, v in self.arrays.items()
            if k != "is_test"}

  def dataset(self, split: str, batch_size: int = 256, shuffle: bool = False,
              seed: int = 0) -> tf.data.Dataset:
    """Batched `tf.data.Dataset` of the "train" or "test" split."""
    select = self.arrays["is_test"] == (split == "test")
    arrays = {k: tf.constant(v[select]) for k, v in self.arrays.items()
              if k != "is_test"}
    # Shuffle indices and gather whole batches: far cheaper than batching
    # example by example.
    ds = tf.data.Dataset.range(int(select.sum()))
    if shuffle:
      ds = ds.shuffle(int(select.sum()), seed=seed,
                      reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda idx: {k: tf.gather(v, idx) for k, v in arrays.items()})
    return ds.prefetch(tf.data.AUTOTUNE)


  def write_records(self, directory: str, shards: int = 2) -> None:
    """Writes the samples as a prepared directory's records (train/ and
    test/ gzip TFRecords of `tf.train.Example`, histories and negatives
    unpadded, as `beam_jobs.prepare` writes them), for `make_dataset`.

    Only the records: no metadata or vocabularies (use `spec`).

    Args:
      directory: created if missing.
      shards: files per split; sample i goes to file i % shards.
    """
    lengths = self.arrays[HISTORY_LENGTH]
    sequences = [n for n in self.arrays if self.arrays[n].ndim == 2]
    scalars = [n for n in self.arrays
               if n not in sequences and n not in (HISTORY_LENGTH, "is_test")]
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split in ("train", "test"):
      rows = np.flatnonzero(self.arrays["is_test"] == (split == "test"))
      tf.io.gfile.makedirs(f"{directory}/{split}")
      writers = [tf.io.TFRecordWriter(
          f"{directory}/{split}/part-{i:05d}-of-{shards:05d}"
          f"{TFRECORD_SUFFIX}", options) for i in range(shards)]
      for position, row in enumerate(rows):
        feature = {}
        for name in scalars:
          value = self.arrays[name][row]
          feature[name] = (
              tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
              if self.arrays[name].dtype.kind == "f" else
              tf.train.Feature(int64_list=tf.train.Int64List(value=[value])))
        for name in sequences:
          feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(
              value=self.arrays[name][row, :lengths[row]]))
        writers[position % shards].write(tf.train.Example(
            features=tf.train.Features(feature=feature)).SerializeToString())
      for writer in writers:
        writer.close()


def _simulate_user(rng, cfg: SyntheticConfig, category_items, item_category):
  """Yields (item, category, label) impressions of one user."""
  interests = list(rng.choice(cfg.num_categories, cfg.interests_per_user,
                              replace=False))
  current = 0
  for _ in range(rng.integers(cfg.min_steps, cfg.max_steps + 1)):
    if rng.uniform() < cfg.switch_prob:
      current = int(rng.choice([i for i in range(len(interests))
                                if i != current]))
    if rng.uniform() < cfg.renew_prob:
      slot = int(rng.choice([i for i in range(len(interests)) if i != current]))
      free = np.setdiff1d(np.arange(cfg.num_categories), interests)
      interests[slot] = int(rng.choice(free))
    u = rng.uniform()
    if u < cfg.show_current:
      category = interests[current]
    elif u < cfg.show_current + cfg.show_other:
      category = interests[int(rng.choice(
          [i for i in range(len(interests)) if i != current]))]
    else:
      category = int(rng.integers(cfg.num_categories))
    items = category_items[category]
    item = int(items[min(int(rng.zipf(1.5)) - 1, len(items) - 1)])
    category = int(item_category[item])
    if category == interests[current]:
      p = cfg.click_current
    elif category in interests:
      p = cfg.click_other
    else:
      p = cfg.click_random
    yield item, category, int(rng.uniform() < p)


def generate(cfg: Optional[SyntheticConfig] = None) -> SyntheticData:
  """Simulates the log and turns it into padded samples (deterministic)."""
  cfg = cfg or SyntheticConfig()
  rng = np.random.default_rng(cfg.seed)
  item_category = rng.integers(cfg.num_categories, size=cfg.num_items)
  item_category[:cfg.num_categories] = np.arange(cfg.num_categories)
  category_items = [rng.permutation(np.flatnonzero(item_category == c))
                    for c in range(cfg.num_categories)]
  L = cfg.max_history
  rows: Dict[str, list] = {k: [] for k in (
      "user_id", "item_id", "category_id", "hist_item_id", "hist_category_id",
      HISTORY_LENGTH, "neg_hist_item_id", "neg_hist_category_id", "label",
      "is_test")}
  events = []
  for user in range(cfg.num_users):
    is_test = rng.uniform() < cfg.test_fraction
    clicks: List[int] = []
    negatives: List[int] = []
    for step, (item, cat, label) in enumerate(
        _simulate_user(rng, cfg, category_items, item_category)):
      events.append(dict(user_id=f"u{user}", item_id=f"i{item}",
                         category_id=f"c{cat}", timestamp=1_600_000_000 +
                         user * 10_000 + step * 60, label=label))
      if clicks:
        hist = np.asarray(clicks[-L:])
        neg = np.asarray(negatives[-L:])
        pad = np.zeros(L - len(hist), np.int64)
        rows["user_id"].append(user + FIRST_ID)
        rows["item_id"].append(item + FIRST_ID)
        rows["category_id"].append(cat + FIRST_ID)
        rows["hist_item_id"].append(np.concatenate([hist + FIRST_ID, pad]))
        rows["hist_category_id"].append(
            np.concatenate([item_category[hist] + FIRST_ID, pad]))
        rows[HISTORY_LENGTH].append(len(hist))
        rows["neg_hist_item_id"].append(np.concatenate([neg + FIRST_ID, pad]))
        rows["neg_hist_category_id"].append(
            np.concatenate([item_category[neg] + FIRST_ID, pad]))
        rows["label"].append(label)
        rows["is_test"].append(is_test)
      if label:
        clicks.append(item)
        negative = int(rng.integers(cfg.num_items))
        while negative == item:
          negative = int(rng.integers(cfg.num_items))
        negatives.append(negative)
  dtypes = {"label": np.float32, "is_test": bool}
  arrays = {k: np.asarray(v, dtype=dtypes.get(k, np.int64))
            for k, v in rows.items()}
  train = ~arrays["is_test"]

  def frequencies(names, size):
    ids = np.concatenate([arrays[n][train].ravel() for n in names])
    return np.bincount(ids, minlength=size).astype(np.float32)

  sizes = dict(user_id=cfg.num_users + FIRST_ID, item_id=cfg.num_items + FIRST_ID,
               category_id=cfg.num_categories + FIRST_ID)

  def feature(name):
    names = [name] + ([f"hist_{name}"] if name != "user_id" else [])
    return CategoricalFeature(name, sizes[name], cfg.embedding_dim,
                              frequencies=frequencies(names, sizes[name]))

  spec = FeatureSpec(user_features=[feature("user_id")],
                     item_features=[feature("item_id"), feature("category_id")],
                     max_history=L)
  return SyntheticData(spec=spec, arrays=arrays, events=events)


def iter_events(cfg: Optional[SyntheticConfig] = None) -> Iterator[dict]:
  """The raw impression log only (user_id, item_id, category_id, timestamp, label)."""
  yield from generate(cfg).events
