"""The docstring examples of every tfrs_din module run and print what they
show, and every public layer documents its paper, shapes and an example."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest
import tensorflow as tf

import tfrs_din
from tfrs_din import layers

MODULES = sorted(m.name for m in pkgutil.walk_packages(tfrs_din.__path__,
                                                        "tfrs_din."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(module_name):
  module = importlib.import_module(module_name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  return [t for t in finder.find(module, module_name,
                                 globs=dict(vars(module), tf=tf, np=np))
          if t.examples]


# Only modules that have examples: the others have nothing to run.
WITH_EXAMPLES = [m for m in MODULES if _examples(m)]


def test_most_modules_have_examples():
  assert len(WITH_EXAMPLES) >= 10


@pytest.mark.parametrize("module_name", WITH_EXAMPLES)
def test_docstring_examples(module_name):
  tests = _examples(module_name)
  runner = doctest.DocTestRunner(optionflags=FLAGS)
  report = []
  for test in tests:
    tf.keras.utils.set_random_seed(0)
    runner.run(test, out=report.append)
  assert runner.failures == 0, "".join(report)
  assert runner.tries > 0


def test_the_layers_modules_have_examples():
  names = {t.name.split(".")[-1] for m in MODULES if ".layers." in m
           for t in _examples(m)}
  assert set(layers.__all__) <= names


@pytest.mark.parametrize("name", layers.__all__)
def test_layer_docstring_has_references_shapes_and_example(name):
  doc = getattr(layers, name).__doc__
  assert "References:" in doc and "arXiv:" in doc and "eq. " in doc
  assert "Input" in doc and "Output" in doc
  assert ">>> " in doc
