"""Reading a `beam_jobs.prepare` output directory into `tf.data` pipelines."""

from __future__ import annotations

import json
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from tfrs_din import schema
from tfrs_din.features import FeatureSpec


def load_metadata(directory: str) -> dict:
  """The metadata.json of a prepared directory, checked against `schema`.

  Args:
    directory: output directory of the Beam job.

  Raises:
    FileNotFoundError: there is no metadata.json.
    ValueError: the data was written under another `schema.SCHEMA_VERSION`.
  """
  path = os.path.join(directory, schema.METADATA_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: is {directory!r} the output of `tfrs-din "
        "prepare` (beam_jobs.prepare)?")
  with tf.io.gfile.GFile(path) as handle:
    metadata = json.load(handle)
  schema.check_version(metadata, path)
  return metadata


def load_feature_spec(directory: str, max_history: Optional[int] = None,
                      embedding_dim: Optional[int] = None
                      ) -> Tuple[FeatureSpec, dict]:
  """The `FeatureSpec` (with id frequencies for MBA) and the metadata.

  Args:
    directory: output directory of the Beam job.
    max_history: overrides the history length written by the job (shorter
      keeps the most recent behaviours).
    embedding_dim: overrides the embedding width of every feature.
  """
  metadata = load_metadata(directory)
  config = dict(metadata["feature_spec"])
  if max_history:
    config["max_history"] = max_history
  if embedding_dim:
    for group in ("user_features", "item_features"):
      config[group] = [dict(f, embedding_dim=embedding_dim)
                       for f in config[group]]
  from beam_jobs.vocabulary import load_vocabularies  # pylint: disable=g-import-not-at-top
  names = [f["name"] for f in config["user_features"] + config["item_features"]]
  frequencies = {n: v.frequencies()
                 for n, v in load_vocabularies(directory, names).items()}
  return FeatureSpec.from_dict(config, frequencies), metadata


def make_dataset(directory: str, split: str, spec: FeatureSpec,
                 batch_size: int = 256, shuffle: bool = False,
                 with_negatives: bool = True, seed: int = 0,
                 repeat: bool = False) -> tf.data.Dataset:
  """Batched, parsed features of a split ("train" or "test").

  Files are read in parallel (interleaved), records shuffled with a seeded
  buffer when `shuffle`, batches parsed vectorised with `parse_example`, and
  the pipeline is prefetched.
  """
  pattern = os.path.join(directory, split, "*" + schema.TFRECORD_SUFFIX)
  files = tf.io.gfile.glob(pattern)
  if not files:
    raise FileNotFoundError(f"no TFRecord files match {pattern!r}")
  ds = tf.data.Dataset.from_tensor_slices(sorted(files))
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed)
  ds = ds.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
      cycle_length=min(len(files), 8), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  if shuffle:
    ds = ds.shuffle(50_000, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(batch_size)
  ds = ds.map(lambda s: spec.parse_examples(s, with_negatives),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)
