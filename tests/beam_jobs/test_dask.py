"""The job on Beam's DaskRunner with a `dask.distributed` LocalCluster of two
worker processes: the same bytes as on the DirectRunner, dead letters and
read = used + rejected, and a worker killed mid-run."""

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from output_files import files_under
from beam_jobs import prepare  # pylint: disable=g-import-not-at-top
from beam_jobs.samples import SampleOptions



@pytest.fixture(scope="module")
def cluster():
  with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                processes=True, dashboard_address=None) as c:
    yield c


def _log(path, n, users, with_bad_rows=True):
  rng = np.random.default_rng(4)
  lines = ["user_id,item_id,category_id,timestamp"]
  for _ in range(n):
    item = int(rng.zipf(1.3)) % 300
    lines.append(f"u{rng.integers(users)},i{item},c{item % 17},"
                 f"{rng.integers(10**6)}")
  if with_bad_rows:
    lines += ["u1,,c1,5", "u2,i1,c1,never", "u3,i1,c1", "u4,i9,c9,1",
              "u4,i9,c9,1"]
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _dask_args(cluster, partitions=4):
  return ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}",
          f"--dask_npartitions={partitions}"]


def test_dask_writes_the_bytes_of_the_direct_runner(tmp_path, cluster):
  config = prepare.PrepareConfig(
      events=_log(tmp_path / "events.csv", 1500, 60),
      output=str(tmp_path / "out"), negative_power=0.75,
      samples=SampleOptions(max_history=8, num_negatives=2, seed=1))
  direct = prepare.run(config)
  expected = files_under(config.output)
  shutil.rmtree(config.output)
  # Small ranges: the events are read by several tasks.
  on_dask = prepare.run(config, _dask_args(cluster), range_bytes=4096)
  assert files_under(config.output) == expected
  assert on_dask == direct
  counts = on_dask["counts"]
  assert counts["events_read"] == 1505
  assert counts["events_rejected"] == 4  # empty item, bad time, 3 columns, dup
  assert counts["events_read"] == counts["events_used"] + counts["events_rejected"]
  assert counts["samples_train"] > 1000


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, cluster):
  config = prepare.PrepareConfig(
      events=_log(tmp_path / "events.csv", 8000, 200, with_bad_rows=False),
      output=str(tmp_path / "out"), samples=SampleOptions(max_history=20))
  prepare.run(config)
  expected = files_under(config.output)
  shutil.rmtree(config.output)
  client = distributed.Client(cluster.scheduler_address)
  victim, pid = sorted(client.run(os.getpid).items())[0]
  result = {}
  job = threading.Thread(target=lambda: result.update(metadata=prepare.run(
      config, _dask_args(cluster, partitions=8), range_bytes=8192)))
  job.start()
  deadline = time.monotonic() + 60
  while not client.processing().get(victim) and time.monotonic() < deadline:
    time.sleep(0.02)
  busy = bool(client.processing().get(victim)) and job.is_alive()
  os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker
  job.join(120)
  assert busy, "the worker had no task in flight when it was killed"
  assert not job.is_alive()
  assert pid not in client.run(os.getpid).values()  # it really died
  client.close()
  # Dask re-ran the lost tasks; every write is deterministic and idempotent.
  assert files_under(config.output) == expected
  assert result["metadata"]["counts"]["events_read"] == 8000


def test_dasks_disk_shuffle_is_refused_before_anything_runs(tmp_path):
  import dask  # pylint: disable=g-import-not-at-top
  config = prepare.PrepareConfig(events=_log(tmp_path / "events.csv", 50, 5),
                                 output=str(tmp_path / "out"))
  args = ["--runner=DaskRunner", "--dask_client_address=tcp://127.0.0.1:1"]
  with dask.config.set({"dataframe.shuffle.method": "disk"}):
    with pytest.raises(ValueError, match=r"disk shuffle .* loses events"):
      prepare.run(config, args)
  assert not os.path.exists(config.output)
