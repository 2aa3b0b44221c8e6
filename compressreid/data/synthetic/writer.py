"""Writes the synthetic benchmark as a Market-1501 tree, atomically: a finished folder always holds every image.

The tree is rendered into a temporary sibling folder, ``identities.json`` and then the ``.complete`` marker are
written last, and the folder is renamed into place; an interrupted render leaves no ``market1501/`` behind.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import tempfile
from typing import Dict, Iterable, List, Tuple

from tqdm import tqdm

from compressreid.data.synthetic.cameras import Camera
from compressreid.data.synthetic.params import GENERATOR_VERSION, SyntheticParams, params_to_dict
from compressreid.data.synthetic.plan import SPLIT_FOLDERS, IdentityPlan, ImageJob, build_plan, image_rng
from compressreid.data.synthetic.render import render_pedestrian
from compressreid.data.synthetic.traits import Traits, summarize_traits
from compressreid.engine.io import current_umask
from compressreid.errors import ConfigError, DataError

DATASET_DIR = "market1501"
METADATA_FILE = "identities.json"
MARKER_FILE = ".complete"
JPEG_QUALITY = 92

Task = Tuple[ImageJob, Traits, Camera, SyntheticParams, str]


def _render_task(task: Task) -> None:
    """Render and save one image (runs in a pool worker; module-level so it pickles)."""
    job, traits, camera, params, root = task
    rng = image_rng(params.seed, job.identity, job.index)
    image = render_pedestrian(traits, camera, job.view, rng, params.height, params.width)
    image.save(os.path.join(root, job.folder, job.file_name), "JPEG", quality=JPEG_QUALITY)


def _tasks(plans: List[IdentityPlan], cameras: List[Camera], params: SyntheticParams, root: str) -> List[Task]:
    return [(job, plan.traits, cameras[job.camera - 1], params, root) for plan in plans for job in plan.jobs]


def _default_sigterm() -> None:
    # forked workers inherit the tools' SIGTERM handler (compressreid.cli), which raises Interrupted; the pool ends
    # its workers with SIGTERM, so without this each printed a traceback in a successful run's output
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_tasks(tasks: List[Task], workers: int, progress: bool) -> None:
    with tqdm(total=len(tasks), desc="synthetic ReID benchmark", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for task in tasks:
                _render_task(task)
                bar.update()
            return
        # Each image owns its generator, so completion order cannot change any byte of the output.
        with multiprocessing.get_context().Pool(workers, initializer=_default_sigterm) as pool:
            for _ in pool.imap_unordered(_render_task, tasks, chunksize=16):
                bar.update()


def _identity_entry(plan: IdentityPlan) -> Dict[str, object]:
    folders = [job.folder for job in plan.jobs]
    entry = {"split": plan.split, "cameras": list(plan.cameras), "num_images": len(plan.jobs)}
    if plan.split == "test":
        entry["num_query"] = folders.count("query")
    entry.update(summarize_traits(plan.traits))
    return entry


def _camera_entry(camera: Camera) -> Dict[str, object]:
    return {
        "gain": round(camera.gain, 4),
        "cast": [round(c, 4) for c in camera.cast],
        "contrast": round(camera.contrast, 4),
        "view_probs": dict(zip(("front", "back", "left", "right"), (round(p, 4) for p in camera.view_probs))),
        "blur": round(camera.blur, 4),
        "lowres": round(camera.lowres, 4),
        "occlusion": camera.occlusion,
    }


def _metadata(params: SyntheticParams, cameras: List[Camera], plans: List[IdentityPlan]) -> Dict[str, object]:
    jobs = [job for plan in plans for job in plan.jobs]
    real = [plan for plan in plans if plan.split != "distractor"]
    return {
        "format": "compressreid-synthetic-market1501",
        "generator_version": GENERATOR_VERSION,
        "seed": params.seed,
        "params": params_to_dict(params),
        "counts": {
            "train_ids": params.num_train_ids,
            "test_ids": params.num_test_ids,
            "train_images": sum(job.folder == "bounding_box_train" for job in jobs),
            "query_images": sum(job.folder == "query" for job in jobs),
            "gallery_images": sum(job.folder == "bounding_box_test" for job in jobs),
            "distractors": params.num_distractors,
            "black_clothes_distractors": sum(p.traits.black_clothes for p in plans if p.split == "distractor"),
        },
        "cameras": {str(camera.index): _camera_entry(camera) for camera in cameras},
        "identities": {f"{plan.pid:04d}": _identity_entry(plan) for plan in real},
    }


def _write_metadata(root: str, metadata: Dict[str, object]) -> None:
    with open(os.path.join(root, METADATA_FILE), "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=1, sort_keys=True)
        handle.write("\n")


def _check_existing(dataset_dir: str, params: SyntheticParams) -> bool:
    """True if ``dataset_dir`` already holds this exact benchmark; raise if it holds something else."""
    if not os.path.exists(dataset_dir):
        return False
    if not os.path.isfile(os.path.join(dataset_dir, MARKER_FILE)):
        raise DataError(f"'{dataset_dir}' exists but is not a complete synthetic benchmark; delete it to re-render")
    recorded = load_identity_metadata(os.path.dirname(dataset_dir)).get("params")
    if recorded != params_to_dict(params):
        raise ConfigError(
            f"'{dataset_dir}' was rendered with different parameters ({recorded}); "
            "render into a folder named by synthetic_folder_name(params)"
        )
    return True


def render_synthetic_benchmark(out_root: str, params: SyntheticParams, progress: bool = True,
                               workers: int = 2) -> str:
    """Render the benchmark to ``out_root/market1501/`` unless that folder already holds it (cache hit).

    Args:
        out_root: parent folder; pick it with ``synthetic_folder_name(params)`` so parameters never collide.
        params: what to render.
        progress: show a tqdm bar with ETA.
        workers: rendering processes (<= 1 renders in this process); the output is byte-identical either way.

    Returns:
        ``out_root``, ready for a Market-1501 loader with ``root=out_root``.

    Raises:
        ConfigError: ``out_root/market1501`` holds a benchmark rendered with other parameters.
        DataError: ``out_root/market1501`` exists but was not written completely by this renderer.
    """
    if not isinstance(params, SyntheticParams):
        raise ConfigError(f"params must be a SyntheticParams, got {type(params).__name__}")
    dataset_dir = os.path.join(out_root, DATASET_DIR)
    if _check_existing(dataset_dir, params):
        return out_root
    os.makedirs(out_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{DATASET_DIR}.partial-", dir=out_root)
    try:
        for folder in SPLIT_FOLDERS:
            os.makedirs(os.path.join(staging, folder))
        cameras, plans = build_plan(params)
        _run_tasks(_tasks(plans, cameras, params, staging), workers, progress)
        _write_metadata(staging, _metadata(params, cameras, plans))
        with open(os.path.join(staging, MARKER_FILE), "w", encoding="utf-8") as handle:
            handle.write(f"generator_version {GENERATOR_VERSION}\n")
        # mkdtemp made the folder 0700 (private while partial); published, it is a dataset like any other
        os.chmod(staging, 0o777 & ~current_umask())
        _publish(staging, dataset_dir, params)
    finally:
        # Also reached on KeyboardInterrupt; after a successful rename there is nothing left to remove.
        shutil.rmtree(staging, ignore_errors=True)
    return out_root


def _publish(staging: str, dataset_dir: str, params: SyntheticParams) -> None:
    try:
        os.rename(staging, dataset_dir)
    except OSError:
        # Another process finished the same render first; its tree is identical, so use it.
        if not _check_existing(dataset_dir, params):
            raise


def load_identity_metadata(out_root: str) -> Dict[str, object]:
    """Parse ``out_root/market1501/identities.json`` (params, seed, counts, cameras, per-identity traits).

    Raises:
        DataError: the file is missing or not valid JSON.
    """
    path = os.path.join(out_root, DATASET_DIR, METADATA_FILE)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"synthetic benchmark metadata not found: '{path}'") from None
    except json.JSONDecodeError as error:
        raise DataError(f"synthetic benchmark metadata is not valid JSON: '{path}': {error}") from None


def iter_images(out_root: str) -> Iterable[str]:
    """Every image path of a rendered benchmark, sorted (for hashing and tests)."""
    root = os.path.join(out_root, DATASET_DIR)
    for folder in SPLIT_FOLDERS:
        for name in sorted(os.listdir(os.path.join(root, folder))):
            yield os.path.join(root, folder, name)
