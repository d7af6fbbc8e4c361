"""Fresh auxiliary negatives under tf.distribute: DIEN trains through
`training.train` with MirroredStrategy over two CPUs, and two multi-worker
workers reading their own files (file sharding) get valid, different
negatives. Fresh processes: devices and cluster servers must be configured
before TensorFlow's runtime starts."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from prepared_log import prepared_log
from tfrs_din.data.synthetic import SyntheticConfig
from tfrs_din.schema import FIRST_INDEX, PADDING_INDEX
from local_cluster import run_workers

MIRRORED = textwrap.dedent('''
    import json, sys
    import tfrs_din
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfrs_din import training
    config = training.TrainConfig(
        model="dien", aux_negatives="fresh", strategy="mirrored", epochs=2,
        batch_size=64, validation_fraction=0.2, refit=False, verbose=0,
        model_options=dict(mlp_units=(8, 4), gru_units=4,
                           activation="prelu"))
    _, logs = training.train(sys.argv[1], sys.argv[2], config)
    print(json.dumps(logs))
''')

WORKER = textwrap.dedent('''
    import json, sys
    import tfrs_din
    import tensorflow as tf
    from tfrs_din.data.negatives import FreshNegatives
    from tfrs_din.data.pipeline import load_feature_spec, make_dataset
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    spec, _ = load_feature_spec(sys.argv[1])
    ds = make_dataset(sys.argv[1], "train", spec, 32, shuffle=True,
                      fresh_negatives=FreshNegatives.from_prepared(
                          sys.argv[1], spec))
    names = ["user_id", "item_id", "hist_item_id", "hist_length",
             "neg_hist_item_id"]
    out = []
    for batch in strategy.experimental_distribute_dataset(ds):
        local = strategy.experimental_local_results(batch)[0]
        out.append({n: local[n].numpy().tolist() for n in names})
    json.dump(out, open(sys.argv[2], "w"))
''')


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  # Four files, so that two workers can shard by file.
  return prepared_log(tmp_path_factory.mktemp("distributed_negatives"),
                      SyntheticConfig(num_users=60, max_steps=20,
                                      num_items=80, num_categories=6, seed=5),
                      "--max_history", "6", "--embedding_dim", "4",
                      "--num_shards", "4")


def _env():
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.dirname(__file__)))]
      + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def test_dien_trains_with_fresh_negatives_under_mirrored(prepared, tmp_path):
  result = subprocess.run(
      [sys.executable, "-c", MIRRORED, prepared, str(tmp_path / "dien")],
      env=_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  logs = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(logs["aux_loss"]) == 2
  assert np.isfinite(logs["loss"]).all() and min(logs["aux_loss"]) > 0


def test_file_sharded_workers_get_valid_and_different_negatives(prepared,
                                                                tmp_path):
  run_workers(WORKER, [[prepared, str(tmp_path / f"{i}")] for i in range(2)],
              _env())
  workers = [json.load(open(tmp_path / f"{i}")) for i in range(2)]
  users = [{u for b in batches for u in b["user_id"]} for batches in workers]
  assert users[0] and users[1] and not users[0] & users[1]  # by file
  same = total = 0
  for batches in workers:
    for b in batches:
      if not b["user_id"]:  # the last, empty, batch of a worker
        continue
      neg, hist = np.array(b["neg_hist_item_id"]), np.array(b["hist_item_id"])
      valid = np.arange(hist.shape[1])[None] < np.array(b["hist_length"])[:, None]
      assert (neg[~valid] == PADDING_INDEX).all()
      assert (neg[valid] >= FIRST_INDEX).all()
      for row in range(len(neg)):
        banned = set(hist[row][valid[row]]) | {b["item_id"][row]}
        assert not banned & set(neg[row][valid[row]])
  for b0, b1 in zip(*workers):  # the same batch slot on the two workers
    for n0, n1 in zip(b0["neg_hist_item_id"], b1["neg_hist_item_id"]):
      same += n0[0] == n1[0]
      total += 1
  assert total > 100 and same / total < 0.2
