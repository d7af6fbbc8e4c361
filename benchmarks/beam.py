"""Throughput of the Beam job (`beam_jobs.prepare`), old vs new path.

  python benchmarks/beam.py [--events 1000000] [--protocols next_item,labeled]
      [--baseline_ref aa53a77] [--old_protocols next_item] [--dask_workers 2]

Every run is a fresh subprocess (its peak RSS is its own); the runs of one
invocation take turns on the same machine, so compare ratios, not absolute
figures. Reported per protocol:
  * new / old events/s on the DirectRunner (in memory, one process); the old
    path is the commit `--baseline_ref`, exported with `git archive`;
  * the DoFns of the new path called on Python lists outside Beam, per event,
    against the whole pipeline's seconds per event (the rest is Beam:
    encoding, shuffles, bundle bookkeeping);
  * the DaskRunner with a LocalCluster of `--dask_workers` processes.
Prints a JSON object and, with --markdown, a table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_events(path: str, n: int, protocol: str, seed: int = 0) -> None:
  """`n` events of `n // 50` users over 50k Zipf-distributed items (as in
  benchmarks/run.py's beam section); a rating column for `labeled`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  users = rng.integers(0, n // 50, n)
  items = rng.zipf(1.3, n) % 50_000
  ts = rng.integers(0, 10**8, n)
  ratings = rng.integers(1, 6, n)
  with open(path, "w") as f:
    if protocol == "labeled":
      f.write("user_id,item_id,category_id,rating,timestamp\n")
      f.writelines(f"u{u},i{i},c{i % 500},{r},{t}\n"
                   for u, i, r, t in zip(users, items, ratings, ts))
    else:
      f.write("user_id,item_id,category_id,timestamp\n")
      f.writelines(f"u{u},i{i},c{i % 500},{t}\n"
                   for u, i, t in zip(users, items, ts))


def _config(prepare, events: str, output: str, protocol: str,
            num_shards: int = 0):
  from beam_jobs.events import Columns  # pylint: disable=g-import-not-at-top
  from beam_jobs.samples import SampleOptions  # pylint: disable=g-import-not-at-top
  columns = Columns(rating="rating") if protocol == "labeled" else Columns()
  return prepare.PrepareConfig(
      events=events, output=output, columns=columns, num_shards=num_shards,
      samples=SampleOptions(protocol=protocol, max_history=50))


def _child(args) -> None:
  """One measured run, in this process; prints a JSON line."""
  sys.path.insert(0, args.code)
  from beam_jobs import prepare  # pylint: disable=g-import-not-at-top
  config = _config(prepare, args.events_path, args.output, args.protocol,
                   args.num_shards)
  out = {}
  start = time.perf_counter()
  if args.mode == "dofns":
    # With the garbage collector set as `prepare.run` sets it (if the code
    # measured has that setting), so that the split is like for like.
    with getattr(prepare, "fewer_full_collections", contextlib.nullcontext)():
      out.update(_dofns_on_lists(prepare, config))
  elif args.mode == "dask":
    from distributed import Client, LocalCluster  # pylint: disable=g-import-not-at-top
    with LocalCluster(n_workers=args.dask_workers, threads_per_worker=1,
                      processes=True, dashboard_address=None,
                      memory_limit=args.dask_memory_limit or "auto") as cluster:
      start = time.perf_counter()
      # Partitions grow with the log (one per input range of
      # --dask_partition_mb, at least 2 per worker), so that a task's input
      # does not grow with it.
      range_bytes = int(args.dask_partition_mb * (1 << 20))
      size = os.path.getsize(args.events_path)
      partitions = max(2 * args.dask_workers, -(-size // range_bytes))
      meta = prepare.run(config, [
          "--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}",
          f"--dask_npartitions={partitions}"], range_bytes=range_bytes)
      out["seconds"] = time.perf_counter() - start
      out["samples"] = meta["counts"]["samples_train"] + meta["counts"]["samples_test"]
      out["dask_partitions"] = partitions
      # Each worker process's own peak RSS (what a worker machine must hold).
      with Client(cluster) as client:
        peaks = client.run(lambda: resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024)
      out["dask_worker_peak_rss_mb"] = sorted(peaks.values())
  else:
    meta = prepare.run(config)
    out["seconds"] = time.perf_counter() - start
    out["samples"] = meta["counts"]["samples_train"] + meta["counts"]["samples_test"]
  # CPU seconds (user + system, this process and its children): the work
  # done, far less sensitive than wall time to other jobs on the machine.
  usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                               resource.RUSAGE_CHILDREN)]
  out["cpu_s"] = sum(u.ru_utime + u.ru_stime for u in usage)
  out["peak_rss_mb"] = max(
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
  print("RESULT " + json.dumps(out), flush=True)


def _dofns_on_lists(prepare, config) -> dict:
  """The new path's DoFns on Python lists (no Beam runner), seconds per stage."""
  from beam_jobs.events import detect_format, read_header  # pylint: disable=g-import-not-at-top
  times = collections.OrderedDict()
  fmt = detect_format(config.events)
  start = time.perf_counter()
  reader = prepare.ReadEvents(config.columns, fmt, read_header(config.events, ","))
  by_user = collections.defaultdict(list)
  for rng in prepare._ranges(config.events, fmt, prepare.RANGE_BYTES):  # pylint: disable=protected-access
    for user, value in reader.process(rng):
      by_user[user].append(value)  # a batch of records (or a tagged value)
  times["read_validate_s"] = time.perf_counter() - start
  start = time.perf_counter()
  clean = prepare.CleanUser(config.max_events_per_user, config.columns)
  users, stats = [], []
  for element in by_user.items():
    for tag, value in clean.process(element):
      if tag == prepare.USER:
        users.append((tag, value))
      elif tag == prepare.STATS:
        stats.append(value)
  merge = prepare._MergeStats()  # pylint: disable=protected-access
  acc = merge.create_accumulator()
  for s in stats:
    merge.add_input(acc, s)
  catalogue = prepare._catalogue(acc, config)  # pylint: disable=protected-access
  times["clean_vocab_s"] = time.perf_counter() - start
  start = time.perf_counter()
  samples = prepare.BuildUserSamples(config, 1)
  samples.setup()
  shards = collections.defaultdict(list)
  for element in users:
    for tag, value in samples.process(element, catalogue):
      if tag == prepare.RECORDS:
        shards[value[0]].append(value[1])
  times["samples_s"] = time.perf_counter() - start
  # What the (split, shard) shuffle carries (compressed) and what it stands
  # for (the frames the files get), in MB.
  payloads = [frames for users_ in shards.values() for _, _, frames in users_]
  sizes = {"shuffle_mb": sum(map(len, payloads)) / 1e6,
           "frames_mb": sum(len(prepare.shuffle_decompress(p))
                                 for p in payloads) / 1e6}
  start = time.perf_counter()
  writer = prepare.WriteShard(config.output, 1)
  os.makedirs(config.output + "/train", exist_ok=True)
  os.makedirs(config.output + "/test", exist_ok=True)
  for element in shards.items():
    list(writer.process(element))
  times["write_s"] = time.perf_counter() - start
  times["seconds"] = sum(times.values())
  return {**times, **sizes}


def _measure(code: str, mode: str, events: str, protocol: str, tmp: str,
             dask_workers: int = 2, num_shards: int = 0,
             dask_partition_mb: float = 4, dask_memory_limit: str = "") -> dict:
  output = tempfile.mkdtemp(dir=tmp)
  shutil.rmtree(output)
  cmd = [sys.executable, os.path.abspath(__file__), "--child", "--code", code,
         "--mode", mode, "--events_path", events, "--output", output,
         "--protocol", protocol, "--dask_workers", str(dask_workers),
         "--num_shards", str(num_shards),
         "--dask_partition_mb", str(dask_partition_mb),
         "--dask_memory_limit", dask_memory_limit]
  env = dict(os.environ, PYTHONPATH=code)
  load = os.getloadavg()[0]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  shutil.rmtree(output, ignore_errors=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if not lines:
    raise RuntimeError(f"{mode} run failed:\n{proc.stderr[-3000:]}")
  result = json.loads(lines[-1][len("RESULT "):])
  result["load_avg_1m_at_start"] = round(load, 2)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--events", type=int, default=1_000_000)
  parser.add_argument("--protocols", default="next_item,labeled")
  parser.add_argument("--old_protocols", default="next_item",
                      help="protocols to also run on the old path (slow)")
  parser.add_argument("--baseline_ref", default="aa53a77")
  parser.add_argument("--dask_workers", type=int, default=2)
  parser.add_argument("--num_shards", type=int, default=0,
                      help="output shards (0: the job's default, one per 64 "
                           "MiB of input); the Dask runs' write groups")
  parser.add_argument("--no_dask", action="store_true")
  parser.add_argument("--dask_partition_mb", type=float, default=4,
                      help="input bytes per Dask partition (and read range)")
  parser.add_argument("--dask_memory_limit", default="",
                      help="each Dask worker's memory limit (e.g. 500MB; it "
                           "spills to disk past ~60%% of it); default: Dask's")
  parser.add_argument("--dask_only", action="store_true",
                      help="only the DaskRunner runs (memory per worker)")
  parser.add_argument("--markdown", action="store_true")
  # Internal: one measured run.
  parser.add_argument("--child", action="store_true")
  parser.add_argument("--code")
  parser.add_argument("--mode")
  parser.add_argument("--events_path")
  parser.add_argument("--output")
  parser.add_argument("--protocol")
  args = parser.parse_args()
  if args.child:
    _child(args)
    return
  tmp = tempfile.mkdtemp()
  old = os.path.join(tmp, "old")
  os.makedirs(old)
  subprocess.run(f"git -C {ROOT} archive {args.baseline_ref} beam_jobs tfrs_din "
                 f"| tar -x -C {old}", shell=True, check=True)
  report = {"events": args.events, "baseline_ref": args.baseline_ref,
            "cpu_count": os.cpu_count()}
  for protocol in args.protocols.split(","):
    events = os.path.join(tmp, f"{protocol}.csv")
    write_events(events, args.events, protocol)
    r = {}
    dask_run = lambda: _measure(ROOT, "dask", events, protocol, tmp,  # pylint: disable=cell-var-from-loop
                                args.dask_workers, args.num_shards,
                                args.dask_partition_mb, args.dask_memory_limit)
    if args.dask_only:
      r["dask"] = dask_run()
      report[protocol] = r
      print(json.dumps({protocol: r}, indent=1), flush=True)
      continue
    r["new"] = _measure(ROOT, "direct", events, protocol, tmp)
    if protocol in args.old_protocols.split(","):
      r["old"] = _measure(old, "direct", events, protocol, tmp)
      r["new_again"] = _measure(ROOT, "direct", events, protocol, tmp)
    r["dofns_on_lists"] = _measure(ROOT, "dofns", events, protocol, tmp)
    if not args.no_dask:
      r["dask"] = dask_run()
    n = args.events
    new_s = min(r["new"]["seconds"], r.get("new_again", r["new"])["seconds"])
    r["new_events_per_s"] = n / new_s
    if "old" in r:
      r["old_events_per_s"] = n / r["old"]["seconds"]
      r["new_vs_old"] = r["old"]["seconds"] / new_s
      new_cpu = min(r["new"]["cpu_s"], r["new_again"]["cpu_s"])
      r["new_vs_old_cpu"] = r["old"]["cpu_s"] / new_cpu
      r["new_vs_old_cpu_slower_new_run"] = r["old"]["cpu_s"] / max(
          r["new"]["cpu_s"], r["new_again"]["cpu_s"])
    r["dofn_us_per_event"] = 1e6 * r["dofns_on_lists"]["seconds"] / n
    r["pipeline_us_per_event"] = 1e6 * new_s / n
    r["dofn_share_of_pipeline"] = r["dofns_on_lists"]["seconds"] / new_s
    if "dask" in r:
      r["dask_events_per_s"] = n / r["dask"]["seconds"]
      r["dask_vs_direct"] = new_s / r["dask"]["seconds"]
    report[protocol] = r
    print(json.dumps({protocol: r}, indent=1), flush=True)
  shutil.rmtree(tmp, ignore_errors=True)
  print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
  main()
