"""Sparse-aware ("lazy") Adam for large embedding tables, with an L2 on
their rows that costs O(batch) per step."""

from __future__ import annotations

import tensorflow as tf


def adam_l2_shrink(weights: tf.Tensor, second_moment: tf.Tensor,
                   learning_rate: tf.Tensor, l2: float, steps: float,
                   epsilon: float = 1e-7) -> tf.Tensor:
  """Weights after `steps` steps of Adam on the L2 gradient alone, in closed
  form, each coordinate w with its (bias-corrected) second moment v held.

  With an L2 penalty (lambda / 2) w^2 in the loss, Adam moves a coordinate
  that gets no data gradient by lr * lambda w / sqrt(v'), where v' is its
  second moment, which the penalty's own gradient keeps at least
  (lambda w)^2. With s = sqrt(v) + epsilon, the continuous-time motion

      d|w| / dk = -lr * lambda |w| / max(s, lambda |w|)

  is linear (-lr per step) while lambda |w| > s and then exponential,
  |w_k| = (s / lambda) exp(-(lr lambda / s) k'), which this returns (the
  sign of w is kept). Rows whose gradients are rare (small v) shrink fast,
  frequent ones hardly: the row-adaptive shrinkage a dense L2 gets from Adam
  (docs/design.md, "embedding penalty").

  Args:
    weights: w, any shape.
    second_moment: v', the same shape (bias-corrected).
    learning_rate: lr.
    l2: lambda (> 0).
    steps: k, the number of steps.
    epsilon: Adam's epsilon.

  Example:

  >>> w = adam_l2_shrink(tf.constant([0.5, -0.5, 1e-4]), tf.constant([0.0, 0.25, 0.0]),
  ...                    learning_rate=0.01, l2=1.0, steps=10)
  >>> [round(float(x), 4) for x in w]  # linear, exponential, gone
  [0.4, -0.4094, 0.0]
  """
  magnitude = tf.abs(weights)
  scale = tf.sqrt(second_moment) + epsilon
  threshold = scale / l2                   # where lambda |w| = s
  linear_steps = tf.nn.relu(magnitude - threshold) / learning_rate
  exponential = tf.minimum(magnitude, threshold) * tf.exp(
      -(learning_rate * l2 / scale) * tf.nn.relu(steps - linear_steps))
  magnitude = tf.where(steps <= linear_steps,
                       magnitude - learning_rate * steps, exponential)
  return tf.sign(weights) * magnitude


# Steps between two shrinks of `LazyAdam(row_l2=...)`: a longer period
# scored lower on validation (docs/design.md).
DEFAULT_ROW_L2_EVERY = 100


def _shrink_table(table: tf.Variable, second_moment: tf.Variable,
                  bias_correction: tf.Tensor, learning_rate: tf.Tensor,
                  l2: float, steps: float, epsilon: float) -> None:
  """Applies `adam_l2_shrink` to a whole table, in place (`LazyAdam` runs
  it as one fused XLA kernel). It reads w and v once and writes w into its
  own buffer: the unfused ops make about ten passes, and a fused kernel
  that returns a new table for `assign` copies it (the cost of a pass:
  docs/benchmarks.md, "vocabulary")."""
  table.assign(adam_l2_shrink(table, second_moment / bias_correction,
                              learning_rate, l2, steps, epsilon))


# Dense gradients of at least this many elements (a table-sized gradient)
# take `_fused_adam_step`; smaller ones (the MLP kernels) Keras' own update,
# for which fusing saves no pass worth a kernel launch.
FUSED_DENSE_MIN_ELEMENTS = 1 << 16


def _fused_adam_step(variable: tf.Variable, m: tf.Variable, v: tf.Variable,
                     gradient: tf.Tensor, alpha: tf.Tensor, beta_1: float,
                     beta_2: float, epsilon: tf.Tensor) -> None:
  """Keras' dense Adam update, in place (`LazyAdam` runs it as one fused XLA
  kernel):

      m <- m + (1 - beta_1) (g - m),  v <- v + (1 - beta_2) (g^2 - v),
      w <- w - alpha m / (sqrt(v) + epsilon).

  Keras compiles its update with XLA only on GPU; on CPU its unfused ops
  make about a dozen passes over the table (docs/benchmarks.md,
  "vocabulary")."""
  m_new = m + (gradient - m) * (1 - beta_1)
  v_new = v + (tf.square(gradient) - v) * (1 - beta_2)
  m.assign(m_new)
  v.assign(v_new)
  variable.assign_sub(alpha * m_new / (tf.sqrt(v_new) + epsilon))


# The fused XLA kernels. Each takes `key`, the variable's process-unique id
# (`_unique_id`, what Keras' optimizers key their slots by), so that every
# variable gets its own trace. Keyed only by the arguments' shapes, a trace
# was reused for a new table whose Python id was a deleted one's, and failed
# ("a function referencing variables which have been deleted"): the second
# model trained in one process after the first was collected.
@tf.function(jit_compile=True)
def _fused_adam_step_xla(variable, m, v, gradient, alpha, beta_1, beta_2,
                         epsilon, key):
  del key  # only for the trace cache
  _fused_adam_step(variable, m, v, gradient, alpha, beta_1, beta_2, epsilon)


@tf.function(jit_compile=True)
def _shrink_table_xla(table, second_moment, bias_correction, learning_rate,
                      l2, steps, epsilon, key):
  del key  # only for the trace cache
  _shrink_table(table, second_moment, bias_correction, learning_rate, l2,
                steps, epsilon)


@tf.keras.saving.register_keras_serializable(package="tfrs_din")
class LazyAdam(tf.keras.optimizers.Adam):
  """Adam that updates only the embedding rows present in a sparse gradient.

  For an `IndexedSlices` gradient g over rows J (duplicates summed):

      m_J <- beta_1 m_J + (1 - beta_1) g_J
      v_J <- beta_2 v_J + (1 - beta_2) g_J^2
      w_J <- w_J - lr_t m_J / (sqrt(v_J) + eps)

  and rows outside J, with their moments, are left untouched. Keras' Adam
  decays m and v and rewrites every row of the table each step, which costs
  O(vocabulary); this costs O(rows in the batch). Dense gradients get
  Keras' Adam update (one fused XLA kernel for variables of at least
  `FUSED_DENSE_MIN_ELEMENTS`). (Rows that are absent for a while keep
  stale moments: the usual trade-off of lazy Adam, as in TF-Addons and
  PyTorch's SparseAdam.)

  With `row_l2` = lambda > 0, every variable that gets sparse gradients (the
  embedding tables) is also shrunk as a dense L2 penalty (lambda / 2) ||W||^2
  would shrink it under Adam, but without its O(vocabulary) cost per step:
  every `row_l2_every` steps each of its coordinates is moved by
  `adam_l2_shrink` for that many steps, with its current second moment
  (bias-corrected). The cost is O(rows in the batch) per step plus one
  O(vocabulary) pass per period. (v is not decayed by beta_2^k at each
  shrink, as dense Adam decays the moments of absent rows: it changed
  nothing on validation.)

  Args:
    row_l2: lambda of the rows' L2 (0: none).
    row_l2_every: k, the steps between two shrinks.
    *args, **kwargs: those of `tf.keras.optimizers.Adam` (amsgrad is not
      supported).

  Example:

  >>> opt = LazyAdam(learning_rate=0.01)
  >>> table = tf.Variable(tf.ones([4, 2]))
  >>> grad = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([2]), tf.constant([4, 2]))
  >>> _ = opt.apply_gradients([(grad, table)])
  >>> [round(float(v), 3) for v in table.numpy()[[0, 2], 0]]
  [1.0, 0.99]
  """

  def __init__(self, *args, row_l2: float = 0.0,
               row_l2_every: int = DEFAULT_ROW_L2_EVERY, **kwargs):
    super().__init__(*args, **kwargs)
    if self.amsgrad:
      raise ValueError("LazyAdam does not support amsgrad.")
    if row_l2 < 0:
      raise ValueError(f"row_l2 must be >= 0, got {row_l2}.")
    if int(row_l2_every) < 1:
      raise ValueError(f"row_l2_every must be >= 1, got {row_l2_every}.")
    self.row_l2 = float(row_l2)
    self.row_l2_every = int(row_l2_every)

  def update_step(self, gradient, variable):
    dense = not isinstance(gradient, tf.IndexedSlices)
    size = variable.shape.num_elements() or 0
    if dense and size < FUSED_DENSE_MIN_ELEMENTS:
      return super().update_step(gradient, variable)
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    beta_1_power = tf.pow(beta_1, step)
    beta_2_power = tf.pow(beta_2, step)
    alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power)
             / (1 - beta_1_power))
    epsilon = (self.epsilon * tf.sqrt(1 - beta_2_power)
               if self.adaptive_epsilon else self.epsilon)
    key = self._var_key(variable)
    m = self._momentums[self._index_dict[key]]
    v = self._velocities[self._index_dict[key]]
    # 1 - beta in Python's doubles, as Keras' dense update has it.
    if dense:
      _fused_adam_step_xla(variable, m, v, gradient, alpha, self.beta_1,
                           self.beta_2, tf.cast(epsilon, dtype), key)
      return

    rows, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position,
                                          tf.shape(rows)[0])
    m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
    v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
    m.scatter_update(tf.IndexedSlices(m_rows, rows))
    v.scatter_update(tf.IndexedSlices(v_rows, rows))
    variable.scatter_sub(tf.IndexedSlices(
        alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))
    if self.row_l2 > 0:

      def shrink():
        _shrink_table_xla(variable, v, 1 - beta_2_power,
                          tf.cast(self.learning_rate, dtype), self.row_l2,
                          float(self.row_l2_every), self.epsilon, key)
        return tf.constant(True)

      tf.cond(tf.equal((self.iterations + 1) % self.row_l2_every, 0), shrink,
              lambda: tf.constant(False))

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(row_l2=self.row_l2, row_l2_every=self.row_l2_every)
    return config
