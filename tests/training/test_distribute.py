"""tf.distribute on CPU: Mirrored == one device, multi-worker, parameter servers.

Each case runs in fresh processes: logical devices and cluster servers must be
configured before TensorFlow's runtime starts.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from local_cluster import free_ports, run_workers

COMMON = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import tfrs_din
    import tensorflow as tf
    from tfrs_din.data.synthetic import generate, SyntheticConfig
    from tfrs_din.models import DINModel
    data = generate(SyntheticConfig(num_users=100, max_history=10, seed=2))

    def make_model(**options):
        # PReLU, not Dice: Dice's batch statistics are per replica by design
        # (like BatchNormalization without cross-replica sync).
        options = {"regularization": "mba", **options}
        return DINModel(data.spec, mlp_units=(8, 4), attention_units=(8, 4),
                        activation="prelu", attention_activation="prelu",
                        **options)
''')

MIRRORED = COMMON + textwrap.dedent('''
    from tfrs_din.optimizers import LazyAdam
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfrs_din import optimizers
    mode = sys.argv[1]
    lazy_l2 = mode == "lazy_l2"  # LazyAdam's rows' L2, every 2 steps
    # dense_l2: every dense gradient takes LazyAdam's fused XLA update.
    optimizers.FUSED_DENSE_MIN_ELEMENTS = 0
    def build():
        if mode == "sgd":
            return make_model()
        return make_model(regularization=mode.replace("dense_", ""), l2=0.05)
    def run(strategy):
        tf.keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build()
            model.compile(LazyAdam(0.01, row_l2_every=2) if mode != "sgd"
                          else tf.keras.optimizers.SGD(0.5))
        model.fit(data.dataset("train", 64).take(6), verbose=0)
        table = model.embedder.tables["item_id"].embeddings
        return (model(data.features(slice(0, 64))).numpy(),
                tf.convert_to_tensor(table).numpy())
    single, single_table = run(tf.distribute.get_strategy())
    mirrored, mirrored_table = run(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    tf.keras.utils.set_random_seed(0)
    untrained = build()(data.features(slice(0, 64))).numpy()
    print(json.dumps({"diff": float(np.abs(single - mirrored).max()),
                      "table_diff": float(np.abs(single_table
                                                 - mirrored_table).max()),
                      "zero_rows": int(np.all(single_table == 0, 1).sum()),
                      "moved": float(np.abs(single - untrained).max())}))
''')

WORKER = COMMON + textwrap.dedent('''
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = make_model()
        model.compile(tf.keras.optimizers.SGD(0.5))
    ds = data.dataset("train", 64).take(6)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    model.fit(ds.with_options(options), verbose=0)
    weights = model.embedder.tables["item_id"].embeddings.numpy()
    np.save(sys.argv[1], weights)
''')

PARAMETER_SERVER = COMMON + textwrap.dedent('''
    from tfrs_din.training.distribute import make_strategy
    ports = [int(p) for p in sys.argv[1].split(",")]
    spec = {"worker": [f"localhost:{ports[0]}", f"localhost:{ports[1]}"],
            "ps": [f"localhost:{ports[2]}", f"localhost:{ports[3]}"]}
    cluster = tf.train.ClusterSpec(spec)
    # In-process servers on a 2-core machine deadlock with the default
    # inter-op pool; TensorFlow's PS tutorial sizes it num_workers + 1.
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=3)
    for job, n in (("worker", 2), ("ps", 2)):
        for i in range(n):
            tf.distribute.Server(cluster, job_name=job, task_index=i,
                                 config=config, protocol="grpc", start=True)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        cluster, rpc_layer="grpc")
    strategy = make_strategy("parameter_server", cluster_resolver=resolver,
                             min_shard_bytes=1024)
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = make_model()
        model.build_all()  # variables (and their shards) created in scope
        # The trainer's selection run zeroes the validation users' rows.
        from tfrs_din.training.trainer import zero_held_out_users
        from tfrs_din.data.pipeline import in_holdout
        zeroed = zero_held_out_users(model, 0.3, seed=0)
        model.compile(tf.keras.optimizers.SGD(0.5))
    users = model.embedder.tables["user_id"].embeddings
    user_rows = tf.convert_to_tensor(users).numpy()
    held = in_holdout(tf.range(user_rows.shape[0]), 0.3, 0).numpy()
    before = model(data.features(slice(0, 32))).numpy()
    table = model.embedder.tables["item_id"].embeddings  # 1002 x 8 floats

    def dataset_fn(context):
        return data.dataset("train", 32).repeat()
    model.fit(tf.keras.utils.experimental.DatasetCreator(dataset_fn),
              epochs=2, steps_per_epoch=4, verbose=0)
    after = model(data.features(slice(0, 32))).numpy()

    # The dense L2 with LazyAdam's fused update on each shard: a row with
    # no data gradient gets g = lambda w, which Adam turns into steps of lr.
    from tfrs_din import optimizers
    from tfrs_din.optimizers import LazyAdam
    optimizers.FUSED_DENSE_MIN_ELEMENTS = 0
    with strategy.scope():
        dense = make_model(regularization="l2", l2=0.05)
        dense.build_all()
        dense.compile(LazyAdam(0.01))
    dense_table = dense.embedder.tables["item_id"].embeddings
    dense_before = tf.convert_to_tensor(dense_table).numpy()
    dense.fit(tf.keras.utils.experimental.DatasetCreator(dataset_fn),
              epochs=1, steps_per_epoch=4, verbose=0)
    dense_after = tf.convert_to_tensor(dense_table).numpy()

    # lazy_l2: LazyAdam shrinks every row of the sharded table every 2 steps.
    with strategy.scope():
        lazy = make_model(regularization="lazy_l2", l2=0.05)
        lazy.build_all()
        lazy.compile(LazyAdam(0.01, row_l2_every=2))
    lazy_table = lazy.embedder.tables["item_id"].embeddings
    lazy_before = tf.convert_to_tensor(lazy_table).numpy()
    lazy.fit(tf.keras.utils.experimental.DatasetCreator(dataset_fn),
             epochs=1, steps_per_epoch=4, verbose=0)
    lazy_after = np.abs(tf.convert_to_tensor(lazy_table).numpy())
    train = data.arrays["is_test"] == 0
    used = np.unique(np.concatenate([data.arrays[k][train].ravel() for k in
                     ("item_id", "hist_item_id", "neg_hist_item_id")]))
    unused = np.setdiff1d(np.arange(lazy_before.shape[0]), used)
    far = np.abs(dense_before[unused]) > 0.06  # 4 steps of 0.01 stay > 0
    dense_shrink = (np.abs(dense_before[unused]) - np.abs(dense_after[unused]))[far]
    # No gradient ever (v = 0): each shrink takes 2 * lr = 0.02 off |w|.
    shrunk = (lazy_after[unused]
              <= np.maximum(np.abs(lazy_before[unused]) - 0.02, 0) + 1e-6)
    print(json.dumps({
        "dense_shards": len(getattr(dense_table, "variables", [dense_table])),
        "dense_far": int(far.sum()),
        "dense_shrink": [float(dense_shrink.min()), float(dense_shrink.max())],
        "lazy_shards": len(getattr(lazy_table, "variables", [lazy_table])),
        "lazy_unused": int(unused.size),
        "lazy_shrunk": bool(shrunk.all()),
        "table_type": type(table).__name__,
        "shards": len(getattr(table, "variables", [table])),
        "shard_devices": sorted({v.device for v in getattr(table, "variables", [table])}),
        "moved": float(np.abs(after - before).max()),
        "user_shards": len(getattr(users, "variables", [users])),
        "zeroed": zeroed, "held": int(held.sum()),
        "held_max": float(np.abs(user_rows[held]).max()),
        "kept_min": float(np.abs(user_rows[~held]).max(axis=1).min())}))
''')


def _env():
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return env


def _last_json(stdout):
  return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["sgd", "lazy_l2", "dense_l2"])
def test_mirrored_over_two_cpus_matches_one_device(mode):
  result = subprocess.run([sys.executable, "-c", MIRRORED, mode], env=_env(),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = _last_json(result.stdout)
  assert out["moved"] > 1e-3          # training changed the predictions
  assert out["diff"] < 1e-4           # and both strategies agree
  if mode == "lazy_l2":  # the shrink ran on each replica's copy alike
    assert out["table_diff"] < 1e-5
    assert out["zero_rows"] > 0
  if mode == "dense_l2":  # the fused update ran on each replica's copy alike
    assert out["table_diff"] < 1e-5


def test_multi_worker_mirrored_with_two_local_workers(tmp_path):
  run_workers(WORKER, [[str(tmp_path / f"w{i}.npy")] for i in range(2)],
              _env())
  import numpy as np
  w0, w1 = (np.load(tmp_path / f"w{i}.npy") for i in range(2))
  np.testing.assert_allclose(w0, w1, rtol=1e-6, atol=1e-7)  # kept in sync
  assert np.abs(w0).max() > 0


def test_parameter_server_shards_embedding_tables_and_trains():
  result = subprocess.run([sys.executable, "-c", PARAMETER_SERVER,
                           ",".join(map(str, free_ports(4)))], env=_env(),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = _last_json(result.stdout)
  assert out["table_type"] == "ShardedVariable"
  assert out["shards"] == 2
  assert any("/job:ps/replica:0/task:0" in d for d in out["shard_devices"])
  assert any("/job:ps/replica:0/task:1" in d for d in out["shard_devices"])
  assert out["moved"] > 1e-4
  # zero_held_out_users writes through the shards of a sharded user table.
  assert out["user_shards"] == 2
  assert out["zeroed"] == out["held"] > 0
  assert out["held_max"] == 0 and out["kept_min"] > 0
  # LazyAdam's fused dense update trains every shard under the dense L2:
  # 4 steps of about lr = 0.01 off every unused row far from zero. Adam's
  # step is exactly lr only while the gradient keeps its size; workers
  # update the rows asynchronously, so a row may move a little more than
  # 4 lr, but never a fifth step.
  assert out["dense_shards"] == 2 and out["dense_far"] > 100
  assert 0.038 < out["dense_shrink"][0] <= out["dense_shrink"][1] < 0.042
  # LazyAdam's rows' L2 (lazy_l2) shrinks the rows of every shard.
  assert out["lazy_shards"] == 2 and out["lazy_unused"] > 100
  assert out["lazy_shrunk"]
