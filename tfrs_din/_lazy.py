"""Package attributes imported on first access (PEP 562), as `tfrs_din` and
`tfrs_din.training` expose them: fast imports, and no import cycles between
subpackages that refer to each other."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Iterable, List, Tuple


def lazy_attributes(package: str, names: Dict[str, str],
                    submodules: Iterable[str]
                    ) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
  """`__getattr__` and `__dir__` for `package`.

  Args:
    package: the package's `__name__`.
    names: public name -> the module that defines it.
    submodules: submodule names, imported as `package.<name>`.

  Returns:
    (`__getattr__`, `__dir__`); the first caches each value in the package.
  """
  submodules = tuple(submodules)
  public = sorted(set(names) | set(submodules))

  def getattr_(name: str) -> Any:
    if name in names:
      value = getattr(importlib.import_module(names[name]), name)
    elif name in submodules:
      value = importlib.import_module(f"{package}.{name}")
    else:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    setattr(importlib.import_module(package), name, value)
    return value

  def dir_() -> List[str]:
    return sorted(set(vars(importlib.import_module(package))) | set(public))

  return getattr_, dir_
