"""Compiles a custom-op C++ source against the installed TensorFlow, once.

The shared library is built on first use with the machine's C++ compiler and
cached under `$TFRS_DIN_KERNEL_CACHE` (default `~/.cache/tfrs_din`), keyed by
the source, the TensorFlow build and the CPU, so a TensorFlow upgrade or a
different machine sharing the cache rebuilds instead of loading a stale
library. Builds are atomic (compile to a temporary name, then rename), so
processes that start together do not read half-written files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

import tensorflow as tf

_LOG = logging.getLogger(__name__)


def compiler() -> Optional[str]:
  """The C++ compiler to use: `$CXX`, else g++, c++ or clang++ on the PATH."""
  if os.environ.get("CXX"):
    return os.environ["CXX"]
  for name in ("g++", "c++", "clang++"):
    if shutil.which(name):
      return name
  return None


def _cpu_flags() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next((line for line in f if line.startswith(("flags", "Features"))),
                  "")
  except OSError:
    return ""


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("TFRS_DIN_KERNEL_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
      "tfrs_din")
  path = pathlib.Path(root)
  try:
    path.mkdir(parents=True, exist_ok=True)
    if os.access(path, os.W_OK):
      return path
  except OSError:
    pass
  return pathlib.Path(tempfile.gettempdir())


def cached_library(source: pathlib.Path) -> Optional[pathlib.Path]:
  """Where `source`'s library is (or would be) cached; None without compiler."""
  cxx = compiler()
  if cxx is None:
    return None
  flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
  key = hashlib.sha256("\n".join(
      [source.read_text(), tf.__version__, tf.__file__, cxx, " ".join(flags),
       platform.machine(), _cpu_flags()]).encode()).hexdigest()[:16]
  return _cache_dir() / f"{source.stem}-{key}.so"


def build_op_library(source: pathlib.Path, timeout_s: float = 600,
                     announce: str = "") -> str:
  """Compiles `source` into a shared library (or reuses the cached one).

  Args:
    source: the C++ file registering the ops and their CPU kernels.
    timeout_s: how long the compiler may run.
    announce: printed on stderr, as one line, before compiling (not when the
      cached library is reused); empty for none.

  Returns:
    The path of the library, for `tf.load_op_library`.

  Raises:
    RuntimeError: no compiler, or the build failed (its output included).
  """
  target = cached_library(source)
  if target is None:
    raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
  if target.exists():
    return str(target)
  cxx = compiler()
  flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
  if announce:
    print(announce, file=sys.stderr, flush=True)
  _LOG.info("compiling %s into %s", source.name, target)
  start = time.monotonic()
  errors = []
  # -march=native: the library is built on the machine that runs it.
  for arch in (["-march=native"], []):
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    command = [cxx, "-std=c++17", "-shared", "-fPIC", "-O3", *arch, "-w",
               str(source), "-o", partial, *flags]
    try:
      result = subprocess.run(command, capture_output=True, text=True,
                              timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
      result = None
      errors.append(str(e))
    if result is not None and result.returncode == 0:
      os.replace(partial, target)
      _LOG.info("built %s in %.0f s", target, time.monotonic() - start)
      return str(target)
    os.unlink(partial)
    if result is not None:
      errors.append(result.stderr[-2000:])
  raise RuntimeError(f"building {source.name} failed:\n" + "\n".join(errors))
