"""Our PTQ against NNCF's on one trained model: same FP32 ONNX file, same calibration images, same evaluator.

    python benchmarks/peer_nncf.py output/ev/r18q_s0
    python benchmarks/peer_nncf.py output/synthetic/demo/prune --ours output/synthetic/demo/quantize
    python benchmarks/peer_nncf.py output/synthetic/demo/teacher --ov-tuned no_concat_op float_split+no_concat_op \
        --rounds 15 --json peer.json

Files compared: the FP32 export; ours (a tools/quantize.py run folder's shipped file via --ours, whose
student_fp32.onnx is then NNCF's input too, else quantized here exactly as the ort_portable target does, without
fallback); ``nncf.quantize`` with its defaults, and with bias correction disabled; ``nncf.quantize_with_accuracy_
control`` (max drop --max-drop mAP points, absolute) whose validation function scores mAP on our query/gallery;
optionally our OpenVINO-tuned prototypes (_ov_tuned.py). Calibration: our calibration_batches (training split,
QUANT.CALIBRATION, seed), one image per NNCF item. Each file runs in ONNX Runtime, OpenVINO with one dynamic-batch
model (``openvino``) and OpenVINO compiled per batch with static shapes (``openvino-static``, as our openvino target
runs it), in accuracy and latency rows alike: mAP, drop, embedding cosine mean/min and
top-10 overlap against the FP32 file in ONNX Runtime (as tools/quantize.py judges), FP32 layers left, size, and
interleaved latency b1/b32 (wall and process CPU ms per call, and the paired CPU-time ratio to ours); and each
file's paired per-query AP difference to ours in the same runtime, with its standard error over queries.

Both sides choose on the test set: our fallback judges its gates there, NNCF's accuracy control is validated there.
``--holdout`` scores every file again on a second test set that no choice saw (for the synthetic benchmark, one
rendered with another seed and more identities), so a file that won the first set by chance shows it there:

    python benchmarks/peer_nncf.py output/ev/r18q_s0 --ours output/q9/r18q_s0_ptq_drop01 --max-drop 0.1 \
        --holdout DATASETS.SYNTHETIC.SEED 1 DATASETS.SYNTHETIC.NUM_TEST_IDS 400 --keep output/peer/r18q_s0

``--keep`` keeps the files (and a stamp of what made them and their hashes); ``--reuse`` then scores the kept NNCF
files again instead of quantizing (accuracy control on OSNet takes over an hour), and refuses files made otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from typing import Dict, List, NoReturn, Sequence

import numpy as np
import onnx
import torch

from compressreid.config import load_config
from compressreid.data.build import load_test_sets
from compressreid.engine.io import file_sha256
from compressreid.engine.source_run import load_source_model
from compressreid.evaluation.evaluator import ReIDEvaluator
from compressreid.export.conventions import ConventionAdapter
from compressreid.export.cpu import this_machine
from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.export.openvino_model import OpenVinoEmbedder
from compressreid.export.ort_model import OrtEmbedder
from compressreid.pipeline.manifest import config_hash
from compressreid.quant.calibration import calibration_batches
from compressreid.quant.compare import (embed_images, evaluate_cached, load_test_images, paired_difference,
                                        quantization_parity)
from compressreid.quant.judge import in_convention
from compressreid.quant.plan import check_quantize_inputs
from compressreid.quant.refine import refinement_of

import _bench
import _ov_tuned

# NNCF's files, by row name (in --keep's folder), and what made them (--reuse checks it)
NNCF_FILES = {"NNCF": "nncf.onnx", "NNCF no bias correction": "nncf_nobc.onnx",
              "NNCF accuracy control": "nncf_ac.onnx"}
STAMP = "peer_stamp.json"

# runtime -> embedder, as _bench.make_runner times it: OpenVINO with one dynamic-batch model, and compiled per batch
# (what the openvino target runs)
EMBEDDERS = {"onnxruntime": OrtEmbedder,
             "openvino": lambda path, threads: _bench.RunnerModule(_bench.make_runner(path, "openvino", threads)),
             "openvino-static": OpenVinoEmbedder}


class RetrievalValidation:
    """NNCF's ``validation_fn``: validation items are query indices; returns (mAP in %, AP of each given query).

    Per-query APs put NNCF in its metric mode, so it ranks quantizer groups by the mAP of the queries it selects
    (those whose AP dropped most) instead of calling this once per item. The whole gallery is embedded once per
    distinct model (cached by the model's bytes) in ONNX Runtime, as our ort_portable target judges. Dense cosine
    or euclidean ranking (TEST.METRIC), no AQE or re-ranking: the evaluator's mAP whenever those are off.
    """

    def __init__(self, images, metric: str, flip: bool, threads: int, folder: str):
        self.images, self.metric, self.flip, self.threads, self.folder = images, metric, flip, threads, folder
        self.cache: Dict[str, np.ndarray] = {}
        self.calls = self.models = 0

    def per_query_ap(self, model: onnx.ModelProto) -> np.ndarray:
        data = model.SerializeToString()
        key = hashlib.sha1(data).hexdigest()
        if key not in self.cache:
            path = os.path.join(self.folder, "validated.onnx")
            with open(path, "wb") as handle:
                handle.write(data)
            embedder = OrtEmbedder(path, self.threads)
            self.models += 1
            q = embed_images(embedder, self.images.q_images, flip=self.flip)
            g = embed_images(embedder, self.images.g_images, flip=self.flip)
            self.cache = {key: _bench.per_query_ap(q, g, self.images, self.metric)}  # NNCF validates one at a time
        return self.cache[key]

    def __call__(self, model: onnx.ModelProto, items) -> tuple:
        self.calls += 1
        ap = self.per_query_ap(model)[np.asarray(list(items), dtype=int)]
        return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0, np.nan_to_num(ap).tolist()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the trained run folder (config.yaml + model_final.pth), as QUANT.SOURCE")
    parser.add_argument("--config-file", default="configs/synthetic/quant_r18.yml", help="the quantize config")
    parser.add_argument("--ours", default="",
                        help="a tools/quantize.py run folder or INT8 file (default: quantize here)")
    parser.add_argument("--max-drop", type=float, default=0.5, help="accuracy control: max mAP drop in points")
    parser.add_argument("--no-accuracy-control", action="store_true")
    parser.add_argument("--ov-tuned", nargs="+", default=[], metavar="VARIANT",
                        help="also our OpenVINO-tuned prototype, one file per '+'-joined variant of "
                             f"{', '.join(_ov_tuned.VARIANTS)}")
    parser.add_argument("--no-nncf-variant", action="store_true",
                        help="skip NNCF with bias correction disabled (its default fast bias correction shifts the "
                             "embedding: see the cosine column)")
    parser.add_argument("--runtimes", nargs="+", default=list(_bench.RUNTIMES), choices=_bench.RUNTIMES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--calls", type=int, nargs="+", default=[20, 3], help="timed calls per cell per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", default="", help="keep the ONNX files in this folder")
    parser.add_argument("--reuse", action="store_true",
                        help="score the NNCF files kept in --keep's folder instead of quantizing again (refused "
                             "unless they were made from the same FP32 file, config, overrides and max drop)")
    parser.add_argument("--holdout", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides of a second test set no choice sees, where every file is scored "
                             "again, e.g. DATASETS.SYNTHETIC.SEED 1 DATASETS.SYNTHETIC.NUM_TEST_IDS 400")
    parser.add_argument("--json", default="")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides")
    args = parser.parse_args()
    if len(args.calls) != len(args.batches):
        parser.error("--calls needs one number per --batches entry")
    if args.reuse and not args.keep:
        parser.error("--reuse needs --keep FOLDER (where the NNCF files were kept)")
    if len(args.holdout) % 2:
        parser.error("--holdout needs KEY VALUE pairs")
    return args


def fail(message: str) -> NoReturn:
    """Bad input: one line, exit 2."""
    print(message, file=sys.stderr)
    sys.exit(2)


def shipped(ours: str) -> tuple:
    """(INT8 file, FP32 file or '') of --ours: a run folder's student_int8.onnx, or a file; with the student_fp32.onnx
    beside it when there is one (a rejected file, student_int8.rejected.onnx, is compared with its own source)."""
    int8 = os.path.join(ours, "student_int8.onnx") if os.path.isdir(ours) else ours
    fp32 = os.path.join(os.path.dirname(int8), "student_fp32.onnx")
    return int8, fp32 if os.path.isfile(fp32) else ""


def check_ours(ours: str) -> None:
    """--ours names a readable file (a run folder: its shipped student_int8.onnx); exits 2 before any work."""
    int8, _ = shipped(ours)
    if not os.path.isfile(int8):
        rejected = os.path.join(os.path.dirname(int8), "student_int8.rejected.onnx")
        hint = (f"; that run was rejected: pass {rejected} to compare its rejected file"
                if os.path.isdir(ours) and os.path.isfile(rejected)
                else "; expected a tools/quantize.py run folder or an INT8 ONNX file")
        fail(f"--ours {ours}: no {int8}{hint}")


def provenance(args, fp32: str, cfg) -> Dict[str, object]:
    """What NNCF's files depend on: the FP32 file's bytes, the resolved config (calibration images and seed
    included) and the accuracy control's max drop."""
    return {"fp32_sha256": file_sha256(fp32), "config_sha256": config_hash(cfg), "max_drop": args.max_drop}


def write_stamp(folder: str, made: Dict[str, object], files: Dict[str, str]) -> None:
    """``made`` (provenance) and each kept NNCF file's name and hash."""
    record = {**made, "files": {os.path.basename(path): file_sha256(path) for name, path in files.items()
                                if name in NNCF_FILES}}
    with open(os.path.join(folder, STAMP), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)


def reused(args, fp32: str, cfg, folder: str) -> Dict[str, str]:
    """NNCF's kept files that match this run (--reuse); exits 2 naming what differs."""
    path = os.path.join(folder, STAMP)
    kept: Dict[str, object] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            kept = json.load(handle)
    wanted = provenance(args, fp32, cfg)
    differs = [key for key in wanted if kept.get(key) != wanted[key]]
    if differs:
        fail(f"--reuse: {folder} holds no NNCF files made like this run ({', '.join(differs)} "
             f"differ{'s' if len(differs) == 1 else ''}); run once without --reuse")
    names = [n for n in NNCF_FILES if not (n == "NNCF no bias correction" and args.no_nncf_variant)
             and not (n == "NNCF accuracy control" and args.no_accuracy_control)]
    hashes = kept.get("files", {})
    changed = [NNCF_FILES[n] for n in names
               if hashes.get(NNCF_FILES[n]) != file_sha256(os.path.join(folder, NNCF_FILES[n]))]
    if changed:
        fail(f"--reuse: {folder} lacks {', '.join(changed)} as the stamp recorded it; run once without --reuse")
    return {n: os.path.join(folder, NNCF_FILES[n]) for n in names}


def make_files(args, cfg, plan, target, batches, images, folder: str) -> Dict[str, str]:
    """Every file to compare, by row name."""
    ours, fp32 = shipped(args.ours) if args.ours else ("", "")
    if not fp32:
        model = load_source_model(plan.source).eval()
        if target.convention.name != plan.source_convention:
            model = ConventionAdapter(model, target.convention)
        fp32 = export_onnx(model, os.path.join(folder, "fp32.onnx"), plan.input_size, cfg.QUANT.OPSET)
    nncf_files = reused(args, fp32, cfg, folder) if args.reuse else {}
    if args.keep and not args.reuse and os.path.exists(os.path.join(folder, STAMP)):
        os.remove(os.path.join(folder, STAMP))  # until this run's files are all written
    files = {"FP32": fp32,
             "ours": ours or _bench.quantize_ours(fp32, os.path.join(folder, "ours.onnx"), batches, target.fmt,
                                                  cfg.QUANT.CALIBRATION.METHOD, refinement_of(cfg))}
    for i, text in enumerate(args.ov_tuned):
        files[f"ours {text}"] = _ov_tuned.quantize_ov_tuned(fp32, os.path.join(folder, f"ours_ov{i}.onnx"), batches,
                                                           target.fmt, _ov_tuned.parse_variant(text),
                                                           cfg.QUANT.CALIBRATION.METHOD)
    if nncf_files:
        return {**files, **nncf_files}
    singles = _bench.single_images(batches)
    files["NNCF"] = _bench.quantize_nncf(fp32, os.path.join(folder, NNCF_FILES["NNCF"]), singles)
    if not args.no_nncf_variant:
        import nncf

        no_bias = nncf.AdvancedQuantizationParameters(disable_bias_correction=True)
        files["NNCF no bias correction"] = _bench.quantize_nncf(
            fp32, os.path.join(folder, NNCF_FILES["NNCF no bias correction"]), singles, advanced_parameters=no_bias)
    if not args.no_accuracy_control:
        files["NNCF accuracy control"] = nncf_accuracy_control(args, cfg, fp32, singles, images, folder)
    if args.keep:
        write_stamp(folder, provenance(args, fp32, cfg), files)
    return files


def nncf_accuracy_control(args, cfg, fp32: str, singles: Sequence[np.ndarray], images, folder: str) -> str:
    import nncf

    validation = RetrievalValidation(images, cfg.TEST.METRIC, cfg.TEST.FLIP.ENABLED, args.threads, folder)
    model = onnx.load(fp32)
    quantized = nncf.quantize_with_accuracy_control(
        model, _bench.nncf_dataset(model, singles), nncf.Dataset(list(range(len(images.q_records)))), validation,
        max_drop=args.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(singles))
    print(f"NNCF accuracy control: validation_fn called {validation.calls} times, {validation.models} models embedded")
    path = os.path.join(folder, NNCF_FILES["NNCF accuracy control"])
    onnx.save(quantized, path)
    return path


def accuracy_rows(args, files, evaluator, images, threads, test_set: str) -> List[Dict[str, object]]:
    """Per file and runtime on one test set: retrieval metrics, agreement with the FP32 file in ONNX Runtime, and the
    paired per-query AP difference to ours in the same runtime (mean and standard error over queries)."""
    reference = evaluate_cached(evaluator, OrtEmbedder(files["FP32"], threads), images)
    ref_map = reference.result.metrics["mAP"]
    rows, ap = [], {}
    for name, path in files.items():
        for runtime in args.runtimes:
            embedded = evaluate_cached(evaluator, EMBEDDERS[runtime](path, threads), images)
            metrics = embedded.result.metrics
            parity = quantization_parity(reference, embedded, evaluator.metric)
            ap[name, runtime] = _bench.per_query_ap(embedded.q_feats, embedded.g_feats, images, evaluator.metric)
            rows.append({"file": name, "runtime": runtime, "test_set": test_set, "queries": len(images.q_records),
                         "mAP": metrics["mAP"], "rank1": metrics["rank1"], "mAP_drop": ref_map - metrics["mAP"],
                         **parity, "size_kb": os.path.getsize(path) / 1024,
                         "fp32_layers": None if name == "FP32" else len(_bench.fp32_layers(path))})
    for row in rows:
        row["vs_ours_mAP"], row["vs_ours_se"] = paired_difference(ap[row["file"], row["runtime"]],
                                                                  ap["ours", row["runtime"]])
    return rows


def latency(args, files, size) -> Dict[str, Dict[str, object]]:
    cells = {}
    for name, path in files.items():
        for runtime in args.runtimes:
            run = _bench.make_runner(path, runtime, args.threads)
            for batch, calls in zip(args.batches, args.calls):
                cells[f"{name}|{runtime}|{batch}"] = (run, example_images(size, batch).numpy(), calls)
    samples = _bench.interleaved(cells, args.rounds)
    out = {}
    for key, cell in samples.items():
        name, runtime, batch = key.split("|")
        base = samples[f"ours|{runtime}|{batch}"]
        out[key] = {**_bench.summarize(cell, int(batch)), "vs_ours": round(_bench.paired_ratio(cell, base), 3),
                    "vs_ours_cpu": round(_bench.paired_ratio(cell, base, "cpu"), 3)}
    return out


ACCURACY_HEAD = (f"{'file':32s} {'runtime':15s} {'mAP':>6s} {'drop':>6s} {'vs ours +- se':>13s} {'cos mean':>8s} "
                 f"{'cos min':>8s} {'top10':>6s} {'FP32 L':>6s} {'KB':>7s}")


def accuracy_cells(row) -> str:
    layers = "-" if row["fp32_layers"] is None else str(row["fp32_layers"])
    paired = "-" if row["file"] == "ours" else f"{row['vs_ours_mAP']:+.2f} +- {row['vs_ours_se']:.2f}"
    return (f"{row['file']:32s} {row['runtime']:15s} {row['mAP']:6.2f} {row['mAP_drop']:6.2f} {paired:>13s} "
            f"{row['cosine_mean']:8.4f} {row['cosine_min']:8.4f} {row['top10_overlap']:6.1f} {layers:>6s} "
            f"{row['size_kb']:7.0f}")


def print_table(rows, lat, batches) -> None:
    head = " ".join(f"{'b' + str(b) + ' ms':>8s} {'cpu':>7s} {'/ours':>6s}" for b in batches)
    print(f"{ACCURACY_HEAD} {head}")
    for row in rows:
        cells = [lat[f"{row['file']}|{row['runtime']}|{b}"] for b in batches]
        print(f"{accuracy_cells(row)} " + " ".join(f"{c['ms_p50']:8.2f} {c['cpu_ms_p50']:7.2f} {c['vs_ours_cpu']:6.3f}"
                                                   for c in cells))


def held_out_images(args, plan, target, selection):
    """The --holdout test set, read like the selection set; exits 2 when it is the selection set again."""
    cfg = load_config(args.config_file, ["QUANT.SOURCE", args.source, *args.opts, *args.holdout,
                                         "INPUT.SIZE_TEST", repr(list(plan.input_size))])
    images = in_convention(load_test_images(cfg, load_test_sets(cfg)[0]), target.convention)
    if shared_images(images, selection):
        fail(f"--holdout {' '.join(args.holdout)}: shares images with the test set the files were chosen on; give "
             f"another dataset or DATASETS.SYNTHETIC.SEED")
    return images


def shared_images(a, b) -> int:
    """How many decoded query/gallery images of test set ``a`` also occur in ``b`` (by content, not path: the
    synthetic benchmark renders the same person again under another folder name when only its size changes)."""
    def contents(images) -> set:
        return {hashlib.sha1(t.numpy().tobytes()).hexdigest() for t in (*images.q_images, *images.g_images)}
    return len(contents(a) & contents(b))


def main() -> None:
    args = parse_args()
    if args.ours:
        check_ours(args.ours)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config_file, ["QUANT.SOURCE", args.source, *args.opts])
    plan = check_quantize_inputs(cfg)
    target = plan.targets[0]
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.INPUT.SIZE_TEST = list(plan.input_size)
    q = cfg.QUANT.CALIBRATION
    batches = [target.convention.from_rgb255(b) for b in calibration_batches(eval_cfg, q.NUM_IMAGES, q.BATCH_SIZE,
                                                                             cfg.SEED)]
    images = in_convention(load_test_images(eval_cfg, load_test_sets(eval_cfg)[0]), target.convention)
    held_out = held_out_images(args, plan, target, images) if args.holdout else None
    evaluator = ReIDEvaluator.from_config(eval_cfg)
    with tempfile.TemporaryDirectory(prefix="peer-nncf-") as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        files = make_files(args, cfg, plan, target, batches, images, folder)
        rows = accuracy_rows(args, files, evaluator, images, args.threads, "selection")
        held_rows = accuracy_rows(args, files, evaluator, held_out, args.threads, "held-out") if held_out else []
        lat = latency(args, files, plan.input_size)
    machine = this_machine()
    weights = target.fmt.describe()["weights"]
    print(f"CPU: {machine['processor']}, kind: {machine['kind']}; {args.threads} threads; {args.rounds} interleaved "
          f"rounds; input {plan.input_size[0]}x{plan.input_size[1]}; target {target.name} ({weights})")
    print(f"source {args.source}; ours: {args.ours or 'quantized here'}; {sum(len(b) for b in batches)} calibration "
          f"images; drop, cosine, top10 vs the FP32 file in onnxruntime; /ours = paired CPU-time ratio to ours")
    print(f"test set ({len(images.q_records)} queries, the one both sides chose on); vs ours = paired per-query AP "
          f"difference to ours in the same runtime +- its standard error")
    print_table(rows, lat, args.batches)
    if held_rows:
        print(f"held-out test set ({len(held_out.q_records)} queries; {' '.join(args.holdout)}), seen by no choice:")
        print(ACCURACY_HEAD)
        for row in held_rows:
            print(accuracy_cells(row))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": machine, "args": vars(args), "files": files, "rows": rows + held_rows,
                       "latency": lat}, handle, indent=1)


if __name__ == "__main__":
    main()
