"""Building the fused kernels: one announced compilation, then the cache; one
clear line and the TensorFlow loop without a compiler."""

import os
import stat
import time

import pytest
import tensorflow as tf

from tfrs_din.ops import build, packed_gru

# Stands in for g++: writes the `-o` target (the real build is exercised by
# tests/ops/test_packed_gru.py and tests/layers/test_gru_equations.py).
FAKE_COMPILER = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
while [ "$#" -gt 0 ]; do
  if [ "$1" = "-o" ]; then echo library > "$2"; fi
  shift
done
"""


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
  path = tmp_path / "fake-g++"
  path.write_text(FAKE_COMPILER)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv("CXX", str(path))
  monkeypatch.setenv("TFRS_DIN_KERNEL_CACHE", str(tmp_path / "cache"))
  return tmp_path / "calls"


def test_compiles_once_with_one_announced_line(fake_compiler, capsys):
  assert packed_gru.built_library() is None
  first = packed_gru.library_path()
  assert capsys.readouterr().err == packed_gru.COMPILING + "\n"
  assert packed_gru.built_library() == build.cached_library(
      packed_gru._SOURCE)  # pylint: disable=protected-access
  assert str(packed_gru.built_library()) == first
  assert packed_gru.library_path() == first
  assert capsys.readouterr().err == ""           # cached: no line, no build
  assert len(fake_compiler.read_text().splitlines()) == 1
  assert os.path.dirname(first) == os.environ["TFRS_DIN_KERNEL_CACHE"]


def test_without_a_compiler_one_line_and_the_tensorflow_loop(monkeypatch,
                                                             capsys):
  monkeypatch.setattr(build, "compiler", lambda: None)
  monkeypatch.setattr(packed_gru, "_library", {})
  assert packed_gru.library() is None
  assert packed_gru.library() is None
  lines = capsys.readouterr().err.splitlines()
  assert lines == ["tfrs_din: fused GRU kernels unavailable (no C++ compiler "
                   "found (set $CXX or install g++)); DIEN's GRUs run as "
                   "TensorFlow ops (slower)."]
  with packed_gru.fused_kernels():
    assert not packed_gru.is_usable(tf.float32)


def test_background_build_compiles_once_and_training_waits_for_it(
    fake_compiler, monkeypatch, capsys):
  slow = fake_compiler.parent / "slow-g++"
  slow.write_text(FAKE_COMPILER.replace("#!/bin/sh\n", "#!/bin/sh\nsleep 1\n"))
  slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv("CXX", str(slow))
  thread = packed_gru.build_in_background()
  assert thread is not None
  while not packed_gru._build_lock.locked():  # pylint: disable=protected-access
    assert thread.is_alive()
    time.sleep(0.01)
  # What training calls while the build runs: it waits, it does not compile.
  path = packed_gru.library_path()
  thread.join(timeout=60)
  assert path == str(packed_gru.built_library())
  assert len(fake_compiler.read_text().splitlines()) == 1
  assert capsys.readouterr().err == packed_gru.COMPILING_IN_BACKGROUND + "\n"
  assert packed_gru.build_in_background() is None  # cached now


def test_no_background_build_when_disabled_or_without_compiler(
    fake_compiler, monkeypatch):
  monkeypatch.setenv("TFRS_DIN_FUSED_KERNELS", "0")
  assert packed_gru.build_in_background() is None
  monkeypatch.delenv("TFRS_DIN_FUSED_KERNELS")
  monkeypatch.setattr(build, "compiler", lambda: None)
  assert packed_gru.build_in_background() is None
  assert not fake_compiler.exists()
