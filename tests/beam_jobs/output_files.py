"""Reading a job's whole output for byte-for-byte comparisons."""

import os
from typing import Dict


def files_under(directory: str) -> Dict[str, bytes]:
  """{path relative to `directory`: bytes} of every file under it."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out
