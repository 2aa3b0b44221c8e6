"""Fixtures of the benchmark scripts' tests."""

from __future__ import annotations

import importlib
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")


@pytest.fixture(scope="session")
def import_benchmark():
    """``import_benchmark(name)``: a script of benchmarks/ as a module, imported as the scripts import each other
    (benchmarks/ on sys.path only while it loads)."""
    def load(name: str):
        with pytest.MonkeyPatch.context() as patch:
            patch.syspath_prepend(BENCHMARKS)
            return importlib.import_module(name)

    return load
