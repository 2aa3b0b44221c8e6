"""The gated compression pipeline: stages (stages.py, builtin.py), gates (gate.py), the runner with its manifest
and resume rule (runner.py, manifest.py), deployment measurements (measure.py) and the report (report.py)."""
