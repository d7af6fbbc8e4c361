"""Inspecting traced TensorFlow functions, for the tests."""


def op_types(concrete_function) -> set:
  """Op types in a traced function, nested functions included."""
  graph = concrete_function.graph.as_graph_def()
  nodes = list(graph.node) + [n for f in graph.library.function
                              for n in f.node_def]
  return {n.op for n in nodes}
