"""Per-sample id counts: the n_j of DIN's mini-batch aware regularisation.

DIN (Zhou et al., KDD 2018, section 4.1, eq. 4) scales the L2 update of
embedding row j by 1/n_j, "the number of occurrences for feature id j in all
samples": the number of training samples in which id j occurs. The
vocabularies of `beam_jobs.prepare` count events instead (one per kept event
of the log); under the next-item protocol an event is the target of one
sample and a behaviour in up to `max_history` later ones, so the two differ
by an order of magnitude. `count_samples` counts samples, in one pass over
the training split.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from tfrs_din.data.pipeline import make_dataset
from tfrs_din.features import FeatureSpec
from tfrs_din.schema import PADDING_INDEX, history_name


def _unique_per_row(ids: tf.Tensor, size: int) -> tf.Tensor:
  """[V] counts of the rows of `ids` [B, n] holding each id (once per row)."""
  ids = tf.sort(tf.cast(ids, tf.int64), axis=1)
  first = tf.concat([tf.ones_like(ids[:, :1], tf.bool),
                     ids[:, 1:] != ids[:, :-1]], axis=1)
  values = tf.boolean_mask(ids, first)
  return tf.math.unsorted_segment_sum(tf.ones_like(values), values, size)


def count_samples(directory: str, spec: FeatureSpec, split: str = "train",
                  batch_size: int = 1024) -> Dict[str, np.ndarray]:
  """For each embedding table, in how many samples of `split` each id occurs.

      n_j(f) = |{samples s : j in ids_f(s)}|

  where ids_f(s) are the ids of sample s that table f embeds: a user
  feature's value; an item feature's candidate value and its `hist_<f>`
  behaviours (the `spec.max_history` most recent, as the model sees them).
  Auxiliary negatives are not counted: they are drawn for the loss, not part
  of the sample (and `aux_negatives="fresh"` draws new ones every epoch), so
  DIN and DIEN get the same n_j on the same data. Vectorised per batch:
  each row's ids are sorted and an id counts where it differs from its
  predecessor. The padding row counts 0; OOV (index 1) counts the samples
  holding an out-of-vocabulary id.

  Args:
    directory: output directory of `beam_jobs.prepare`.
    spec: its feature spec (`load_feature_spec`, with the max_history the
      model trains with).
    split: the split counted ("train").
    batch_size: examples per batch of the counting pass.

  Returns:
    feature name -> float32 [vocab_size] counts, the `frequencies` of
    `with_frequencies`.
  """
  sizes = {f.name: f.vocab_size for f in spec.user_features + spec.item_features}

  def count(features):
    out = {}
    for f in spec.user_features:
      out[f.name] = _unique_per_row(features[f.name][:, tf.newaxis],
                                    sizes[f.name])
    for f in spec.item_features:
      ids = tf.concat([features[f.name][:, tf.newaxis],
                       features[history_name(f.name)]], axis=1)
      out[f.name] = _unique_per_row(ids, sizes[f.name])
    return out

  zeros = {name: tf.zeros([size], tf.int64) for name, size in sizes.items()}
  dataset = make_dataset(directory, split, spec, batch_size,
                         with_negatives=False)
  totals = dataset.map(count, num_parallel_calls=tf.data.AUTOTUNE).reduce(
      zeros, lambda acc, batch: {k: acc[k] + batch[k] for k in acc})
  out = {}
  for name, value in totals.items():
    value = value.numpy().astype(np.float32)
    value[PADDING_INDEX] = 0  # padded history positions are no id
    out[name] = value
  return out


def with_frequencies(spec: FeatureSpec, frequencies: Dict[str, np.ndarray]
                     ) -> FeatureSpec:
  """A copy of `spec` whose features carry `frequencies` (n_j per row).

  Args:
    spec: the feature spec.
    frequencies: feature name -> [vocab_size] counts; features not named keep
      theirs.
  """
  kept = {f.name: f.frequencies for f in spec.user_features + spec.item_features
          if f.frequencies is not None}
  return FeatureSpec.from_dict(spec.to_dict(), {**kept, **frequencies})
