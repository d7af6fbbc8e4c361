"""Training batches grouped by history length (`make_dataset`) stay a fair
shuffle: every record once per epoch, full batches, the batches' label and
user mix those of ungrouped batches, the buckets' batches interleaved over
the epoch; and every batch is padded to a bucket boundary only. On both of
`make_dataset`'s paths: the split in memory, and streamed from its files."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tfrs_din.data.negatives import FreshNegatives
from tfrs_din.data.pipeline import (GROUP_BLOCK_BATCHES, IN_MEMORY_MAX_BYTES,
                                    make_dataset)
from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.features import HISTORY_LENGTH, PADDING_INDEX

BATCH = 32
BOUNDARIES = (4, 8, 16, 32)
EPOCHS = 4
# The log of the `data` and `directory` fixtures (tests/data/conftest.py).
SYNTHETIC = SyntheticConfig(num_users=300, max_steps=60, max_history=40,
                            seed=1)


def _epochs(ds, epochs=EPOCHS):
  """The batches of `epochs` passes over `ds`, as NumPy dicts."""
  return [[{k: v.numpy() for k, v in b.items()} for b in ds]
          for _ in range(epochs)]


@pytest.fixture(scope="module", params=[IN_MEMORY_MAX_BYTES, 0],
                ids=["in_memory", "streaming"])
def path(request):
  """`make_dataset`'s `in_memory_max_bytes`: the split in memory, or
  streamed."""
  return dict(in_memory_max_bytes=request.param)


@pytest.fixture(scope="module")
def grouped(data, directory, path):
  return _epochs(make_dataset(directory, "train", data.spec, BATCH,
                              shuffle=True, with_negatives=True, seed=3,
                              group_by_length=True, **path))


@pytest.fixture(scope="module")
def ungrouped(data, directory, path):
  return _epochs(make_dataset(directory, "train", data.spec, BATCH,
                              shuffle=True, with_negatives=True, seed=3,
                              bucket_boundaries=None, **path))


def _keys(batch):
  """One hashable key per record: its features (history unpadded)."""
  return [(u, i, y, tuple(h[:n])) for u, i, y, h, n in zip(
      batch["user_id"], batch["item_id"], batch["label"],
      batch["hist_item_id"], batch[HISTORY_LENGTH])]


def _bucket(lengths):
  return np.searchsorted(BOUNDARIES + (40,), lengths, side="left")


def test_every_record_is_in_exactly_one_full_batch_per_epoch(
    data, grouped, ungrouped):
  records = int((~data.arrays["is_test"]).sum())
  expected = collections.Counter(k for b in ungrouped[0] for k in _keys(b))
  assert sum(expected.values()) == records
  orders = []
  for epoch in grouped:
    assert len(epoch) == -(-records // BATCH)    # as many batches as before
    sizes = [len(b["label"]) for b in epoch]
    assert sizes.count(BATCH) >= len(epoch) - 1  # all full but the last
    keys = [k for b in epoch for k in _keys(b)]
    assert collections.Counter(keys) == expected
    orders.append(keys)
  assert orders[0] != orders[1]                  # a new order every epoch


def test_batches_are_padded_to_the_bucket_of_their_longest_history(grouped):
  widths = collections.Counter()
  for batch in grouped[0]:
    lengths = batch[HISTORY_LENGTH]
    width = batch["hist_item_id"].shape[1]
    widths[width] += 1
    # The first boundary at or above the longest history.
    assert width == (BOUNDARIES + (40,))[_bucket(lengths.max())]
    for name in ("hist_category_id", "neg_hist_item_id",
                 "neg_hist_category_id"):
      assert batch[name].shape == batch["hist_item_id"].shape, name
    padded = np.arange(width)[None] >= lengths[:, None]
    for name in ("hist_item_id", "neg_hist_item_id"):
      assert (batch[name][padded] == PADDING_INDEX).all()
      assert (batch[name][~padded] != PADDING_INDEX).all()
  assert set(widths) == set(BOUNDARIES)


def test_prepared_negatives_are_the_records_own(data, grouped):
  """neg_hist_* of each record, cut to the batch's width, are the ones the
  record was written with."""
  arrays = data.arrays
  expected = {}
  for row in np.flatnonzero(~arrays["is_test"]):
    n = arrays[HISTORY_LENGTH][row]
    key = (arrays["user_id"][row], arrays["item_id"][row],
           arrays["label"][row], tuple(arrays["hist_item_id"][row, :n]))
    expected.setdefault(key, set()).add(
        tuple(arrays["neg_hist_item_id"][row, :n]))
  for batch in grouped[0]:
    for key, negatives, n in zip(_keys(batch), batch["neg_hist_item_id"],
                                 batch[HISTORY_LENGTH]):
      assert tuple(negatives[:n]) in expected[key]


def test_records_are_grouped_by_length(grouped, ungrouped):
  """Most batches hold one bucket (a batch at a bucket change in a block
  spans two), and the padded work falls to a fraction of the ungrouped."""
  def single_bucket_share(epoch):
    return np.mean([len(set(_bucket(b[HISTORY_LENGTH]))) == 1
                    for b in epoch])

  def padded_positions(epoch):
    return sum(b["hist_item_id"].size for b in epoch)

  blocks = -(-len(grouped[0]) // GROUP_BLOCK_BATCHES)
  mixed = sum(len(set(_bucket(b[HISTORY_LENGTH]))) > 1 for b in grouped[0])
  assert mixed <= blocks * (len(BOUNDARIES) - 1)
  assert single_bucket_share(grouped[0]) > 0.85
  assert single_bucket_share(ungrouped[0]) < 0.05
  valid = sum(b[HISTORY_LENGTH].sum() for b in grouped[0])
  # Each batch pays at most twice its records' bucket bound; ungrouped, all
  # pay max_history (40) for histories of ~9 behaviours.
  assert padded_positions(grouped[0]) < 0.35 * padded_positions(ungrouped[0])
  assert padded_positions(grouped[0]) < 2.5 * valid


def _positive_rates(epochs):
  return np.array([b["label"].mean() for epoch in epochs for b in epoch
                   if len(b["label"]) == BATCH])


def _dispersion(rates, p, records):
  """Mean squared deviation of the batches' positive rate from the split's
  over its value for batches drawn at random without replacement,
  p (1 - p) / B * (N - B) / (N - 1): about 1 for a fair shuffle."""
  reference = p * (1 - p) / BATCH * (records - BATCH) / (records - 1)
  return np.mean((rates - p) ** 2) / reference


def test_the_batches_label_mix_is_that_of_ungrouped_batches(
    data, grouped, ungrouped):
  labels = data.arrays["label"][~data.arrays["is_test"]]
  p, records = float(labels.mean()), len(labels)
  rates, rates_ungrouped = _positive_rates(grouped), _positive_rates(ungrouped)
  # Over whole epochs the rate is the split's, exactly.
  assert sum(b["label"].sum() for b in grouped[0]) == labels.sum()
  # The dispersion of n batch rates: chi-square / n, sd ~ sqrt(2 / n) (0.04
  # here); 0.2 is five of them.
  n = len(rates)
  assert abs(_dispersion(rates, p, records) - 1) < 5 * np.sqrt(2 / n)
  assert abs(_dispersion(rates_ungrouped, p, records) - 1) < 5 * np.sqrt(2 / n)
  assert abs(rates.mean() - p) < 4 * np.sqrt(p * (1 - p) / BATCH / n)
  # The whole distribution: two-sample Kolmogorov-Smirnov distance, below
  # its 0.1% critical value 1.95 sqrt(2 / n).
  grid = np.unique(np.concatenate([rates, rates_ungrouped]))
  cdf = lambda r: np.searchsorted(np.sort(r), grid, side="right") / len(r)
  assert np.abs(cdf(rates) - cdf(rates_ungrouped)).max() < 1.95 * np.sqrt(
      2 / n)
  # The statistic catches an unfair grouping: batches cut from records
  # sorted by label within the same blocks.
  block = BATCH * GROUP_BLOCK_BATCHES
  shuffled = np.random.default_rng(0).permutation(labels)
  by_label = np.concatenate([np.sort(shuffled[i:i + block])
                             for i in range(0, records, block)])
  unfair = by_label[:records // BATCH * BATCH].reshape(-1, BATCH).mean(1)
  assert _dispersion(unfair, p, records) > 10


def _same_user_pairs(epochs):
  """Mean number of pairs of records of one user in a (full) batch."""
  pairs = [sum(c * (c - 1) // 2 for c in
               collections.Counter(b["user_id"]).values())
           for epoch in epochs for b in epoch if len(b["label"]) == BATCH]
  return float(np.mean(pairs))


def test_the_batches_user_mix_is_that_of_random_batches_in_a_bucket(
    data, grouped, ungrouped):
  """How often one user's records share a batch. Ungrouped: as in batches
  drawn at random from the split. Grouped: as in batches drawn at random
  from the records of one bucket, so only a user's records of similar
  history length meet more often; each such pair is in one batch with
  probability B / N_bucket instead of B / N, a gap that shrinks with the
  data. The share of distinct users in a batch barely moves."""
  train = ~data.arrays["is_test"]
  users = data.arrays["user_id"][train]
  buckets = _bucket(data.arrays[HISTORY_LENGTH][train])
  records = len(users)

  def pairs(keys):
    return sum(c * (c - 1) / 2 for c in collections.Counter(keys).values())

  # Per batch (N / B batches): pairs of one user's records that share it.
  per_batch = BATCH / records
  random = pairs(users) * (BATCH - 1) / (records - 1) * per_batch
  in_bucket = sum(
      pairs(users[buckets == b]) * (BATCH - 1) / ((buckets == b).sum() - 1)
      for b in np.unique(buckets)) * per_batch
  assert abs(_same_user_pairs(ungrouped) - random) < 0.1 * random
  assert abs(_same_user_pairs(grouped) - in_bucket) < 0.1 * in_bucket
  distinct = lambda epochs: np.mean([len(set(b["user_id"])) / BATCH
                                     for e in epochs for b in e
                                     if len(b["label"]) == BATCH])
  assert abs(distinct(grouped) - distinct(ungrouped)) < 0.03


def test_the_buckets_batches_interleave_over_the_epoch(grouped):
  """Consecutive batches share a bucket about as often as two batches drawn
  at random do (sum of the squared bucket shares), not in runs; and each
  bucket's batches spread over the whole epoch."""
  same = total = 0
  shares = collections.Counter()
  positions = collections.defaultdict(list)
  for epoch in grouped:
    buckets = [b["hist_item_id"].shape[1] for b in epoch]
    same += sum(a == b for a, b in zip(buckets[:-1], buckets[1:]))
    total += len(buckets) - 1
    shares.update(buckets)
    for i, width in enumerate(buckets):
      positions[width].append(i / (len(buckets) - 1))
  random_pairs = sum((c / sum(shares.values())) ** 2 for c in shares.values())
  assert abs(same / total - random_pairs) < 0.06, (same / total, random_pairs)
  for width, where in positions.items():
    if len(where) > 50:
      assert abs(np.mean(where) - 0.5) < 0.1, width


def test_a_compiled_step_traces_once_per_bucket(data, directory, path):
  traces = []

  @tf.function
  def step(features):
    traces.append(features["hist_item_id"].shape)
    return tf.reduce_sum(features["hist_item_id"])

  for batch in make_dataset(directory, "train", data.spec, BATCH,
                            shuffle=True, group_by_length=True, **path):
    if len(batch["label"]) == BATCH:    # the last batch's size would trace
      step(batch)
  assert len(traces) == len(BOUNDARIES)   # the widths that occur here


def test_unshuffled_batches_keep_the_order_and_pad_to_a_boundary(
    data, directory, path):
  ds = make_dataset(directory, "test", data.spec, BATCH, **path)
  plain = make_dataset(directory, "test", data.spec, BATCH,
                       bucket_boundaries=None, **path)
  for batch, reference in zip(ds, plain):
    lengths = batch[HISTORY_LENGTH].numpy()
    width = batch["hist_item_id"].shape[1]
    assert width == (BOUNDARIES + (40,))[_bucket(lengths.max())]
    np.testing.assert_array_equal(batch["user_id"], reference["user_id"])
    np.testing.assert_array_equal(batch["hist_item_id"],
                                  reference["hist_item_id"][:, :width])
    assert (reference["hist_item_id"].numpy()[:, width:] == 0).all()


def test_fresh_negatives_are_padded_like_the_history(data, directory,
                                                      path):
  item = data.spec.item_features[0]
  table = np.stack([np.arange(item.vocab_size)] * 2, axis=1)
  sampler = FreshNegatives(table, item.frequencies, ["item_id", "category_id"])
  for batch in make_dataset(directory, "train", data.spec, BATCH, shuffle=True,
                            fresh_negatives=sampler, **path).take(20):
    assert batch["neg_hist_item_id"].shape == batch["hist_item_id"].shape
    valid = (np.arange(batch["hist_item_id"].shape[1])[None]
             < batch[HISTORY_LENGTH].numpy()[:, None])
    assert (batch["neg_hist_item_id"].numpy()[valid] >= 2).all()
    assert (batch["neg_hist_item_id"].numpy()[~valid] == PADDING_INDEX).all()


def test_grouping_needs_boundaries(data, directory):
  with pytest.raises(ValueError, match="group_by_length needs "
                     "bucket_boundaries"):
    make_dataset(directory, "train", data.spec, BATCH, shuffle=True,
                 bucket_boundaries=None, group_by_length=True)
  with pytest.raises(ValueError, match="bucket boundaries must be integers"):
    make_dataset(directory, "train", data.spec, BATCH, shuffle=True,
                 bucket_boundaries=(0, 8))
