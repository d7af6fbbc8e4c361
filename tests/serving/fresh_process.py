"""Runs a script against an export in a fresh Python process, as a server
would load it: no project code imported, Keras left at its default."""

import json
import os
import subprocess
import sys


def run_requests(script: str, export_path: str, requests: dict,
                 tmp_path) -> dict:
  """Runs `script EXPORT REQUESTS_JSON OUT_JSON` and returns OUT_JSON's data.

  Args:
    script: Python source run with `python -c`; it reads the requests file
      and writes its answers as JSON to the output file.
    export_path: the SavedModel directory.
    requests: JSON-serialisable requests, written to a file for the script.
    tmp_path: a directory for the two files (also the working directory).
  """
  req_path, out_path = tmp_path / "requests.json", tmp_path / "out.json"
  req_path.write_text(json.dumps(requests))
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  result = subprocess.run([sys.executable, "-c", script, export_path,
                           str(req_path), str(out_path)], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(out_path.read_text())
