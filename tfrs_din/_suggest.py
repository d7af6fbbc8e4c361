"""The "did you mean" of every mistyped flag, config key and model option.

Standard library only: the command line, `TrainConfig` files and the Beam
job's flag parsing (`beam_jobs.prepare`) all use it, and none of them may
load TensorFlow or Beam to say that a name is mistyped.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Optional

# How alike a known name must be to be offered (difflib's ratio, 0 to 1).
CUTOFF = 0.7


def closest(name: str, known: Iterable[str], cutoff: float = CUTOFF
            ) -> Optional[str]:
  """The name of `known` most like `name` (leading dashes aside), if at
  least `cutoff` alike; None otherwise.

  difflib's ratio depends on the order of its two strings; the lower of the
  two counts, so that a long name does not match a short one by chance. Of
  equally alike names the first in sorted order is given.

  >>> closest("--max_histroy", ["--max_history", "--min_count"])
  '--max_history'
  >>> closest("--zzz", ["--max_history"]) is None
  True
  """
  def score(candidate: str) -> float:
    a, b = name.lstrip("-"), candidate.lstrip("-")
    return min(difflib.SequenceMatcher(None, a, b).ratio(),
               difflib.SequenceMatcher(None, b, a).ratio())
  best = max(sorted(known), key=score, default=None)
  return best if best is not None and score(best) >= cutoff else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
  """"; did you mean X?" for the closest of `known` (see `closest`), or "".

  X is written as the messages write such names: a flag (leading dash) as
  it is typed, any other name (a config key, a model option) quoted.

  >>> did_you_mean("--epoch", ["--epochs"]), did_you_mean("epoch", ["epochs"])
  ('; did you mean --epochs?', "; did you mean 'epochs'?")
  """
  close = closest(name, known)
  if close is None:
    return ""
  return f"; did you mean {close if close.startswith('-') else repr(close)}?"
