"""Fused CPU kernels for the packed GRU recurrence, and when to use them.

`packed_gru.cc` runs the whole recurrence of `packed_gru_recurrence` forward
in one op and backward in another, where TensorFlow's loop dispatches about
twenty small ops per step (docs/benchmarks.md, "Training speed"). The
library is compiled on first use (`tfrs_din.ops.build`; one line is printed
before the compilation, which takes tens of seconds),
ahead of training with `tfrs-din build-kernels`, or in a background thread
(`build_in_background`, which `tfrs-din run/train/demo` start first).

The ops are used only where they are safe to use:

* inside `fused_kernels()`, which `CTRModel.train_step` and `test_step` enter.
  Functions traced for export (SavedModel, TF Serving) run outside it and keep
  standard ops only, so a model server without our library loads them;
* on CPU (no GPU visible), for float32, and not under a
  `ParameterServerStrategy`, whose workers are plain servers that have not
  loaded the library;
* unless `TFRS_DIN_FUSED_KERNELS=0`, or the library could not be built (no
  compiler: one line is printed, the TensorFlow loop is used).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import threading
from typing import Iterator, Optional

import tensorflow as tf

from tfrs_din.ops import build

_LOG = logging.getLogger(__name__)
_SOURCE = pathlib.Path(__file__).with_name("packed_gru.cc")
# The op types the kernels add to a graph (e.g. to check an export has none).
KERNEL_OPS = frozenset({"TfrsDinPackedGruForward", "TfrsDinPackedGruBackward"})

# Printed once, before the first (and only) compilation on a machine.
COMPILING = "tfrs_din: compiling fused GRU kernels (once, ~40 s)..."
COMPILING_IN_BACKGROUND = ("tfrs_din: compiling fused GRU kernels in the "
                           "background (once, ~40 s)...")

_state = threading.local()
_library = {}
# One compilation per process: a training step that needs the library while
# `build_in_background` compiles it waits for that build instead of starting
# a second one.
_build_lock = threading.Lock()


def library_path(announce: str = COMPILING) -> str:
  """Compiles the kernels if they are not cached yet; returns the library path.

  `tfrs-din build-kernels` calls this ahead of training.

  Args:
    announce: the line printed before compiling (not when cached).

  Raises:
    RuntimeError: no C++ compiler, or the build failed.
  """
  with _build_lock:
    return build.build_op_library(_SOURCE, announce=announce)


def _allowed_by_environment() -> bool:
  """False when the user turned the kernels off (`TFRS_DIN_FUSED_KERNELS=0`)."""
  return os.environ.get("TFRS_DIN_FUSED_KERNELS", "1") != "0"


def build_in_background() -> Optional[threading.Thread]:
  """Starts compiling the kernels in a daemon thread, if they will be needed.

  `tfrs-din run`, `train --model dien` and `demo` call this first, so the
  ~40 s compilation overlaps data preparation and the other models instead
  of stalling DIEN's first training step (which waits for it if it is not
  done yet). Nothing starts if the library is cached, there is no compiler,
  or `TFRS_DIN_FUSED_KERNELS=0`; a failed build is reported when training
  asks for the library.

  Returns:
    The started thread, or None.
  """
  if (not _allowed_by_environment() or build.compiler() is None
      or built_library() is not None):
    return None

  def compile_quietly():
    try:
      library_path(COMPILING_IN_BACKGROUND)
    except RuntimeError as e:  # library() reports it when it is needed
      _LOG.info("background kernel build failed: %s", e)

  thread = threading.Thread(target=compile_quietly, daemon=True,
                            name="tfrs_din-kernel-build")
  thread.start()
  return thread


def built_library() -> Optional[pathlib.Path]:
  """The cached library if it is compiled already, else None."""
  path = build.cached_library(_SOURCE)
  return path if path is not None and path.exists() else None


@tf.autograph.experimental.do_not_convert
def library():
  """The loaded op library, building it on first call; None if unavailable."""
  if "ops" not in _library:
    try:
      _library["ops"] = tf.load_op_library(library_path())
    except (RuntimeError, tf.errors.NotFoundError) as e:
      reason = str(e).splitlines()[0] if str(e) else type(e).__name__
      print(f"tfrs_din: fused GRU kernels unavailable ({reason}); DIEN's GRUs "
            "run as TensorFlow ops (slower).", file=sys.stderr, flush=True)
      _LOG.info("fused GRU kernel build error: %s", e)
      _library["ops"] = None
  return _library["ops"]


@contextlib.contextmanager
def fused_kernels(enabled: bool = True) -> Iterator[None]:
  """Lets recurrences traced inside this block use the fused kernels.

  Args:
    enabled: False forbids them inside the block.
  """
  previous = getattr(_state, "enabled", False)
  _state.enabled = enabled
  try:
    yield
  finally:
    _state.enabled = previous


@tf.autograph.experimental.do_not_convert
def is_usable(dtype: tf.DType) -> bool:
  """Whether a recurrence of `dtype` traced here would use the kernels."""
  if not getattr(_state, "enabled", False) or dtype != tf.float32:
    return False
  if not _allowed_by_environment():
    return False
  if tf.config.list_logical_devices("GPU"):
    return False
  strategy = tf.distribute.get_strategy()
  if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
    return False
  return library() is not None


def fused_recurrence(inputs: tf.Tensor, gate_scale: Optional[tf.Tensor],
                     step_sizes: tf.Tensor, initial_state: tf.Tensor,
                     recurrent_kernel: tf.Tensor, recurrent_bias: tf.Tensor,
                     gate: str = "gru") -> Optional[tf.Tensor]:
  """`packed_gru_recurrence` by the fused kernels, or None where not usable.

  Same arguments and result as `tfrs_din.layers.recurrence`'s function.
  """
  if not is_usable(inputs.dtype):
    return None
  ops = library()
  if gate_scale is None:
    gate_scale = tf.zeros([0, 1], inputs.dtype)
  step_sizes = tf.cast(step_sizes, tf.int32)

  @tf.custom_gradient
  def recurrence(x, scale, h0, kernel, bias):
    states, gates = ops.tfrs_din_packed_gru_forward(
        x, scale, step_sizes, h0, kernel, bias, gate=gate)

    def backward(d_states):
      d_x, d_scale, d_h0, d_kernel, d_bias = ops.tfrs_din_packed_gru_backward(
          x, scale, step_sizes, h0, kernel, bias, states, gates, d_states,
          gate=gate)
      return d_x, d_scale if gate != "gru" else None, d_h0, d_kernel, d_bias

    return states, backward

  return recurrence(inputs, gate_scale, initial_state,
                    tf.convert_to_tensor(recurrent_kernel),
                    tf.convert_to_tensor(recurrent_bias))
