"""Synthetic embeddings with planted identities for the large-gallery benchmarks, generated chunk by chunk.

Every query's identity has ``per_id`` gallery images near a random unit centre; the rest of the gallery are
distractors with unique identities. Each gallery chunk has its own seed, so a worker that streams the gallery
into a compressed store sees exactly the rows a worker holding the whole array sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np


@dataclass
class PlantedSpec:
    num_query: int
    num_gallery: int
    dim: int = 512
    num_ids: int = 5000
    per_id: int = 8
    noise: float = 1.7  # norm of the noise added to identity centres
    seed: int = 0
    chunk: int = 2000  # rows generated at once: small, so generating adds little to a worker's peak RSS


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _centres(spec: PlantedSpec) -> np.ndarray:
    return _unit(np.random.default_rng([spec.seed, 0]).standard_normal((spec.num_ids, spec.dim), dtype=np.float32))


def labels(spec: PlantedSpec) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(q_pids, g_pids, q_camids, g_camids)``."""
    rng = np.random.default_rng([spec.seed, 1])
    planted = min(spec.num_ids * spec.per_id, spec.num_gallery)
    g_pids = np.concatenate([np.arange(planted) % spec.num_ids, spec.num_ids + np.arange(spec.num_gallery - planted)])
    g_pids = g_pids[rng.permutation(spec.num_gallery)]
    g_camids = rng.integers(0, 6, spec.num_gallery)
    q_pids = rng.integers(0, spec.num_ids, spec.num_query)
    q_camids = rng.integers(0, 6, spec.num_query)
    return q_pids, g_pids, q_camids, g_camids


def _sample(spec: PlantedSpec, centres: np.ndarray, pids: np.ndarray, rng) -> np.ndarray:
    """Unit float32 rows: identity centre (distractors: none) plus noise, all in float32."""
    x = rng.standard_normal((len(pids), spec.dim), dtype=np.float32)
    x *= np.float32(spec.noise / np.sqrt(spec.dim))  # per coordinate, so the noise vector has norm ~ noise
    planted = pids < spec.num_ids
    x[planted] += centres[pids[planted]]
    return _unit(x)


def queries(spec: PlantedSpec, q_pids: np.ndarray) -> np.ndarray:
    centres, out = _centres(spec), np.empty((len(q_pids), spec.dim), dtype=np.float32)
    for i, start in enumerate(range(0, len(q_pids), spec.chunk)):
        rng = np.random.default_rng([spec.seed, 2, i])
        out[start : start + spec.chunk] = _sample(spec, centres, q_pids[start : start + spec.chunk], rng)
    return out


def gallery_chunks(spec: PlantedSpec, g_pids: np.ndarray) -> Iterator[np.ndarray]:
    """The gallery rows in order, ``spec.chunk`` at a time."""
    centres = _centres(spec)
    for i, start in enumerate(range(0, spec.num_gallery, spec.chunk)):
        rng = np.random.default_rng([spec.seed, 3, i])
        yield _sample(spec, centres, g_pids[start : start + spec.chunk], rng)


def gallery(spec: PlantedSpec, g_pids: np.ndarray) -> np.ndarray:
    """The whole gallery as one (num_gallery, dim) float32 array."""
    out = np.empty((spec.num_gallery, spec.dim), dtype=np.float32)
    for i, rows in enumerate(gallery_chunks(spec, g_pids)):
        out[i * spec.chunk : i * spec.chunk + len(rows)] = rows
    return out
