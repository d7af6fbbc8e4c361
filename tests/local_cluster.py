"""Local multi-worker clusters for the tf.distribute tests: free ports, and
worker processes started with their TF_CONFIG."""

import json
import socket
import subprocess
import sys


def free_ports(n):
  """n ports that were free a moment ago (bound, read, released)."""
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def run_workers(script, worker_args, env, timeout=600):
  """Runs `python -c script *worker_args[i]` as worker i of a local cluster
  of len(worker_args) workers and waits; asserts each one exited cleanly.

  Args:
    script: the worker's Python source.
    worker_args: one list of command-line arguments per worker.
    env: the environment of every worker (without TF_CONFIG).
    timeout: seconds each worker may run.
  """
  cluster = {"worker": [f"localhost:{p}" for p in free_ports(len(worker_args))]}
  procs = []
  for index, args in enumerate(worker_args):
    worker_env = dict(env, TF_CONFIG=json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}}))
    procs.append(subprocess.Popen(
        [sys.executable, "-c", script, *args], env=worker_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  for proc in procs:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
