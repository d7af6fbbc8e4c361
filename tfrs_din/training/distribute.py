"""Choosing a `tf.distribute` strategy by name."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tfrs_din.training.config import STRATEGIES


def make_strategy(name: str = "auto", num_ps_shards: Optional[int] = None,
                  cluster_resolver=None, min_shard_bytes: int = 256 << 10
                  ) -> tf.distribute.Strategy:
  """Returns the strategy called `name`.

  Args:
    name: "auto" (MirroredStrategy over all GPUs when there are several, else
      one device), "one_device" (TensorFlow's default strategy: the first GPU
      if any, else the CPU; unlike OneDeviceStrategy it supports Keras'
      BackupAndRestore, which resumes interrupted training), "mirrored", "multi_worker" (reads TF_CONFIG),
      or "parameter_server" (reads TF_CONFIG or `cluster_resolver`; embedding
      tables are sharded over the parameter servers).
    num_ps_shards: shards per large variable for "parameter_server" (default:
      the number of parameter servers).
    cluster_resolver: optional resolver for "parameter_server" (in-process
      clusters in tests).
    min_shard_bytes: "parameter_server" splits a variable into shards of at
      least this size (so small variables stay whole).
  """
  if name not in STRATEGIES:
    raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    name = "mirrored" if len(gpus) > 1 else "one_device"
  if name == "one_device":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  resolver = (cluster_resolver or
              tf.distribute.cluster_resolver.TFConfigClusterResolver())
  shards = num_ps_shards or len(resolver.cluster_spec().as_dict().get("ps", [1]))
  partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
      min_shard_bytes=min_shard_bytes, max_shards=shards)
  return tf.distribute.experimental.ParameterServerStrategy(
      resolver, variable_partitioner=partitioner)
