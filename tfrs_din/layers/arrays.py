"""NumPy arrays and Python lists as layer inputs, converted at the boundary.

Keras 2 converts NumPy arrays only in a layer's first argument, and turns a
Python list there into a list of scalar tensors; other tensor arguments
(keys, masks, attention, ...) reach `call` unconverted. `accepts_arrays`
makes every argument of a layer's `__call__` accept arrays and lists.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Type, TypeVar

import numpy as np
import tensorflow as tf

_NUMBERS = (bool, int, float, np.generic)
LayerType = TypeVar("LayerType", bound=Type[tf.keras.layers.Layer])


def to_tensors(value: Any, float_dtype: Optional[tf.DType] = None) -> Any:
  """Converts NumPy arrays and nested Python lists of numbers to tensors.

  Tensors, `tf.RaggedTensor`s, Keras symbolic tensors, Python scalars and
  bools are returned as they are; dicts, and lists holding tensors or arrays
  (e.g. RNN states), are converted element by element.

  Args:
    value: an argument of a layer call.
    float_dtype: floating values are cast to it (the layer's compute dtype).

  Example:

  >>> to_tensors({"ids": [[1, 2]], "x": np.ones(2)}, tf.float32)["x"].dtype
  tf.float32
  """
  if isinstance(value, (np.ndarray, np.generic)) or (
      isinstance(value, (list, tuple)) and value
      and all(isinstance(v, _NUMBERS) for v in tf.nest.flatten(value))):
    tensor = tf.convert_to_tensor(value)
    if float_dtype is not None and tensor.dtype.is_floating:
      tensor = tf.cast(tensor, float_dtype)
    return tensor
  if isinstance(value, dict):
    return type(value)((k, to_tensors(v, float_dtype)) for k, v in value.items())
  if isinstance(value, (list, tuple)):
    return type(value)(to_tensors(v, float_dtype) for v in value)
  return value


def accepts_arrays(cls: LayerType) -> LayerType:
  """Class decorator: `layer(...)` converts every argument with `to_tensors`.

  Floating arrays are cast to the layer's compute dtype, as Keras does for
  the first argument.

  Args:
    cls: a `tf.keras.layers.Layer` subclass.
  """
  call = cls.__call__
  if getattr(call, "_tfrs_din_accepts_arrays", False):
    return cls  # inherited from a decorated base class

  @functools.wraps(call)
  def __call__(self, *args, **kwargs):
    dtype = tf.as_dtype(self.compute_dtype) if self.compute_dtype else None
    return call(self, *(to_tensors(a, dtype) for a in args),
                **{k: to_tensors(v, dtype) for k, v in kwargs.items()})

  __call__._tfrs_din_accepts_arrays = True
  cls.__call__ = __call__
  return cls
