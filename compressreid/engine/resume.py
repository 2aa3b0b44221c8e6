"""Resumable training state: what a checkpoint holds, how it is restored, and when resuming is refused.

A checkpoint holds the model, the loop's state (iteration, optimizer, AMP scaler, hooks, task), the random
generators and the config it was trained with; the sampler position is the iteration itself.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
import yaml
from yacs.config import CfgNode

from compressreid.checkpoint import read_checkpoint, save_checkpoint
from compressreid.engine.loop import TrainLoop
from compressreid.errors import CheckpointError, ConfigError

LAST_CHECKPOINT = "last_checkpoint.pth"
FINAL_MODEL = "model_final.pth"
# Keys a resumed run may change: where things are, how many loader workers read them (augmentation is seeded per
# image, so the result does not depend on NUM_WORKERS) and how strictly input checkpoints are checked. Anything
# else changes the training.
_RESUMABLE_SUFFIXES = ("_DIR", "_PATH", ".ROOT", ".WEIGHTS", ".GATE_REFERENCE", "DATALOADER.NUM_WORKERS",
                       "MODEL.LOAD_STRICT")


def rng_states() -> Dict[str, object]:
    """Every random generator a training step may use, in a form ``weights_only`` loading accepts."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states: Dict[str, object] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # the current device: one per rank
    return states


def set_rng_states(states: Dict[str, object]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the body (e.g. an evaluation) without moving any generator the training stream depends on."""
    states = rng_states()
    try:
        yield
    finally:
        set_rng_states(states)


def save_training_state(path: str, loop: TrainLoop, cfg: CfgNode) -> str:
    """Atomically write everything ``restore_training_state`` needs to continue exactly where ``loop`` is."""
    return save_checkpoint(path, loop.task.model, iteration=loop.iter, loop=loop.state_dict(), rng=rng_states(),
                           config=cfg.dump(), world_size=loop.dist.world_size)


def read_training_state(output_dir: str, cfg: CfgNode) -> Dict[str, object]:
    """The last checkpoint of ``output_dir``, checked against ``cfg`` (see ``check_resumable``)."""
    state = read_checkpoint(check_resumable(output_dir, cfg))
    state["path"] = os.path.join(output_dir, LAST_CHECKPOINT)
    return state


def check_resumable(output_dir: str, cfg: CfgNode) -> str:
    """Check that ``output_dir`` holds a checkpoint a run with ``cfg`` may resume; returns its path.

    Cheap (tensors are memory-mapped, not read), so tools call it before touching the run folder.

    Raises:
        CheckpointError: no checkpoint to resume from, or one without training state.
        ConfigError: ``cfg`` differs from the checkpoint's config in a key that changes the training.
    """
    path = os.path.join(output_dir, LAST_CHECKPOINT)
    if not os.path.isfile(path):
        raise CheckpointError(f"--resume: no {LAST_CHECKPOINT} in {output_dir} (was the run started there? "
                              "a run killed before its first checkpoint starts again without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - read_checkpoint names the problem precisely
        read_checkpoint(path)
        raise CheckpointError(f"--resume: cannot read {path}: {exc}") from None
    missing = [key for key in ("model", "loop", "rng", "config") if key not in state]
    if missing:
        raise CheckpointError(f"--resume: {path} lacks training state ({', '.join(missing)}); "
                              "not a resumable checkpoint")
    changed = config_differences(state["config"], cfg)
    if changed:
        raise ConfigError(f"--resume: the config differs from the one {path} was trained with in "
                          f"{len(changed)} key(s): {'; '.join(changed[:5])}; resume with the original config "
                          "(only paths and DATALOADER.NUM_WORKERS may change)")
    return path


def config_differences(saved_yaml: str, cfg: CfgNode) -> List[str]:
    """'KEY: saved -> now' for every key that differs, except paths and the number of loader workers."""
    saved, now = _flatten(yaml.safe_load(saved_yaml) or {}), _flatten(yaml.safe_load(cfg.dump()) or {})
    return [f"{key}: {saved.get(key)!r} -> {now.get(key)!r}" for key in sorted(set(saved) | set(now))
            if saved.get(key) != now.get(key) and not key.endswith(_RESUMABLE_SUFFIXES)]


def _flatten(node: object, prefix: str = "") -> Dict[str, object]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: Dict[str, object] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def restore_training_state(loop: TrainLoop, state: Dict[str, object], strict_model: bool = True) -> None:
    """Load the model, loop (optimizer, scaler, hooks, task) and generators of ``state`` into ``loop``."""
    try:
        loop.task.model.load_state_dict(state["model"], strict=strict_model)
    except RuntimeError as exc:
        raise CheckpointError(f"--resume: {state.get('path', 'checkpoint')} does not fit the model: "
                              f"{str(exc).splitlines()[0]}") from None
    loop.load_state_dict(state["loop"])
    set_rng_states(state["rng"])


def resume_iteration(state: Optional[Dict[str, object]]) -> int:
    """The number of finished iterations (0 for a fresh run): where the sampler stream continues."""
    return int(state["loop"]["iteration"]) if state else 0
