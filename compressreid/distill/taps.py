"""Forward-hook taps: read intermediate tensors by module path without touching ``forward``.

Re-resolve after anything renames or replaces modules (pruning, QAT fusion); remove when done.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from compressreid.errors import ConfigError


class FeatureTaps:
    """Hooks on ``paths`` inside ``model``; each forward stores the modules' outputs until ``collect``.

    The stored tensors are the modules' own outputs (no copy): for the student they keep their autograd
    graph, which is what feature losses need. A model that later modifies such an output in place would
    corrupt it; the ResNet and timm stage outputs we tap are only read afterwards.
    """

    def __init__(self, model: nn.Module, paths: Sequence[str] = ()):
        self.model = model
        self.paths: List[str] = list(dict.fromkeys(paths))  # unique, order kept
        self._handles: list = []
        self._captured: Dict[str, torch.Tensor] = {}
        self.resolve()

    def resolve(self, paths: Sequence[str] | None = None) -> None:
        """(Re)attach hooks, to ``paths`` when given; unknown paths raise ConfigError naming the model's taps."""
        self.remove()
        if paths is not None:
            self.paths = list(dict.fromkeys(paths))
        modules = []
        for path in self.paths:
            try:
                modules.append(self.model.get_submodule(path))
            except AttributeError:
                declared = ", ".join(f.module for f in getattr(self.model, "feature_info", [])) or "(none declared)"
                raise ConfigError(f"{type(self.model).__name__} has no module '{path}' to tap; "
                                  f"declared feature taps: {declared}") from None
        self._handles = [module.register_forward_hook(self._hook(path)) for path, module in zip(self.paths, modules)]

    def _hook(self, path: str):
        def store(module: nn.Module, inputs, output) -> None:
            self._captured[path] = output

        return store

    def clear(self) -> None:
        """Forget captured tensors (call before a forward so ``collect`` sees only that forward)."""
        self._captured = {}

    def collect(self) -> Dict[str, torch.Tensor]:
        """The tensors of the last forward; clears them so no graph outlives its step.

        Raises:
            RuntimeError: a tapped module did not run in that forward.
        """
        captured, self._captured = self._captured, {}
        missing = [p for p in self.paths if p not in captured]
        if missing:
            raise RuntimeError(f"feature taps {missing} did not fire during the last forward of "
                               f"{type(self.model).__name__}")
        return captured

    def remove(self) -> None:
        """Detach every hook and drop captured tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._captured = [], {}

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
