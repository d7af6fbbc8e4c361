"""Op-level profile of training steps on a prepared data set.

    python benchmarks/step_profile.py --data toys/ --model dien [--steps 60]

Trains the model `tfrs-din train` ships for two warm-up epochs of `--steps`
steps, profiles a third with the TensorFlow profiler, and prints examples/s
per epoch and the share of op time by kind of op (the profile's op events
on TensorFlow's compute threads, summed by op type; the executor's own
events left out).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# Op types by kind, for the shares printed.
KINDS = {
    "MatMul": ("MatMul", "_FusedMatMul", "BatchMatMulV2"),
    "fused GRU kernels": ("TfrsDinPackedGruForward", "TfrsDinPackedGruBackward"),
    "segment sums, gathers, scatters": (
        "UnsortedSegmentSum", "GatherV2", "ResourceGather", "GatherNd",
        "ScatterNd", "ResourceScatterUpdate", "ResourceScatterSub"),
    "concat, tile, broadcast, slice": (
        "ConcatV2", "Tile", "BroadcastTo", "Pack", "Slice", "StridedSlice",
        "Reshape"),
    "XLA-compiled optimizer updates": ("ExecuteAsyncOnStream", "ParallelFor"),
}
EXECUTOR = ("Process", "Start", "Done", "ExecutorDoneCallback")


def op_shares(xplane_path: str) -> dict:
  """Share of op time by kind (`KINDS`; the rest is "elementwise and
  reductions", or "other XLA fusions") in a profile."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  space = xplane_pb2.XSpace()
  with open(xplane_path, "rb") as f:
    space.ParseFromString(f.read())
  by_kind = collections.Counter()
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_Compute"):
        continue
      for event in line.events:
        op_type = plane.event_metadata[event.metadata_id].name.split(":")[-1]
        if op_type in EXECUTOR:
          continue
        kind = next((k for k, types in KINDS.items() if op_type in types),
                    "other XLA fusions" if "fusion" in op_type
                    else "elementwise and reductions")
        by_kind[kind] += event.duration_ps
  total = sum(by_kind.values()) or 1
  return {k: round(v / total, 3) for k, v in by_kind.most_common()}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", required=True, help="a prepared data set")
  parser.add_argument("--model", choices=("base", "din", "dien"),
                      default="din")
  parser.add_argument("--steps", type=int, default=60)
  args = parser.parse_args()
  import tfrs_din  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrs_din.data.negatives import FreshNegatives  # pylint: disable=g-import-not-at-top
  from tfrs_din.data.pipeline import load_feature_spec, make_dataset  # pylint: disable=g-import-not-at-top
  from tfrs_din.training import TrainConfig  # pylint: disable=g-import-not-at-top
  from tfrs_din.training import trainer  # pylint: disable=g-import-not-at-top

  config = TrainConfig(model=args.model)
  spec, _ = load_feature_spec(args.data)
  tf.keras.utils.set_random_seed(0)
  model = trainer.build_model(spec, config)
  model.build_all()
  model.compile(trainer.make_optimizer(config.optimizer,
                                       config.learning_rate))
  fresh = (FreshNegatives.from_prepared(args.data, spec,
                                        config.aux_negative_power)
           if model.has_auxiliary_loss else None)
  dataset = make_dataset(args.data, "train", spec, config.batch_size,
                         shuffle=True, seed=0, repeat=True,
                         fresh_negatives=fresh)
  logdir = tempfile.mkdtemp(prefix="tfrs_din_profile_")

  class Epochs(tf.keras.callbacks.Callback):

    def on_epoch_begin(self, epoch, logs=None):
      if epoch == 2:
        tf.profiler.experimental.start(logdir)
      self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      seconds = time.perf_counter() - self.start
      if epoch == 2:
        tf.profiler.experimental.stop()
      print(f"epoch {epoch}: {args.steps * config.batch_size / seconds:,.0f} "
            f"examples/s", flush=True)

  model.fit(dataset, steps_per_epoch=args.steps, epochs=3, verbose=0,
            callbacks=[Epochs()])
  path = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*",
                                       "*.xplane.pb")))[-1]
  for kind, share in op_shares(path).items():
    print(f"{100 * share:5.1f}%  {kind}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
