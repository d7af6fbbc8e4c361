"""Apache Beam jobs that turn interaction logs into DIN/DIEN training data."""
