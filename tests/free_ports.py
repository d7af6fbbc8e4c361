"""Free TCP ports on localhost, for tests that start multi-worker clusters."""

import socket


def free_ports(n):
  """n ports that were free a moment ago (bound, read, released)."""
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports
