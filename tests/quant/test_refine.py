"""GPTQ rounding (compressreid.quant.gptq) and the refinement of a PTQ file (compressreid.quant.refine): the math on
its own, then a tiny exported ResNet-18 quantized in the portable format with and without refinement."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch.nn import functional as F

from compressreid.errors import ConfigError
from compressreid.export.onnx_export import example_images, export_onnx
from compressreid.export.ort_model import ort_session
from compressreid.quant.fallback import ptq_quantizer
from compressreid.quant.format import QuantFormat
from compressreid.quant.gptq import asymmetric_target, conv_input_moments, gptq_round
from compressreid.quant.ptq import calibrate, preprocess, quantize_ptq
from compressreid.quant.refine import NEAREST, Refinement, integer_weight_codes
from compressreid.quant.saturation import accumulation_bounds, int8_weighted_nodes

from tiny_models import tiny_resnet18

SIZE = (32, 16)


def _nearest(w, scale, qmax):
    return torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax)


def test_gptq_with_uncorrelated_inputs_is_nearest_rounding():
    torch.manual_seed(0)
    w, scale = torch.randn(6, 20, dtype=torch.float64), torch.rand(6, dtype=torch.float64) * 0.05 + 0.01
    hessian = torch.diag(torch.rand(20, dtype=torch.float64) + 0.5)
    assert torch.equal(gptq_round(w, hessian, scale, 64, block=7), _nearest(w, scale, 64))


def test_gptq_lowers_the_output_error_on_correlated_inputs_and_stays_in_range():
    torch.manual_seed(0)
    rows, k, n = 16, 96, 4000
    x = torch.randn(k, 8, dtype=torch.float64) @ torch.randn(8, n, dtype=torch.float64) \
        + 0.1 * torch.randn(k, n, dtype=torch.float64)  # low-rank inputs: neighbouring columns can compensate
    w = torch.randn(rows, k, dtype=torch.float64)
    scale = w.abs().max(dim=1).values / 64
    hessian = x @ x.T / n
    gptq = gptq_round(w, hessian, scale, 64, block=32)
    nearest = _nearest(w, scale, 64)

    def error(codes):
        return float(((w - codes * scale[:, None]) @ x).pow(2).sum())
    assert gptq.abs().max() <= 64 and torch.equal(gptq, gptq.round())
    assert error(gptq) < 0.5 * error(nearest)


def test_gptq_over_groups_equals_one_call_per_group():
    torch.manual_seed(0)
    w, scale = torch.randn(3, 2, 9, dtype=torch.float64), torch.rand(3, 2, dtype=torch.float64) * 0.05 + 0.01
    x = torch.randn(3, 9, 200, dtype=torch.float64)
    hessian = x @ x.transpose(1, 2) / 200
    batched = gptq_round(w, hessian, scale, 64)
    for g in range(3):
        assert torch.equal(batched[g], gptq_round(w[g], hessian[g], scale[g], 64))


def test_asymmetric_target_is_the_weight_when_both_graphs_feed_the_same_inputs():
    torch.manual_seed(0)
    w, x = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, 12, 300, dtype=torch.float64)
    hessian = x @ x.transpose(1, 2) / 300
    assert torch.equal(asymmetric_target(w, hessian, torch.zeros_like(hessian)), w)


def test_asymmetric_calibration_absorbs_the_error_upstream_left_in_the_inputs():
    torch.manual_seed(0)
    rows, k, n = 16, 48, 4000
    x = torch.randn(k, 8, dtype=torch.float64) @ torch.randn(8, n, dtype=torch.float64) \
        + 0.3 * torch.randn(k, n, dtype=torch.float64)  # what the FP32 graph feeds the layer
    # what the quantized graph feeds it: the same, with a systematic error (a channel mix) and noise
    x_q = (torch.eye(k, dtype=torch.float64) + 0.05 * torch.randn(k, k, dtype=torch.float64)) @ x \
        + 0.02 * torch.randn(k, n, dtype=torch.float64)
    w = torch.randn(rows, k, dtype=torch.float64)
    scale = w.abs().max(dim=1).values / 48  # headroom: the corrected weights stay on the grid
    hessian, difference = x_q @ x_q.T / n, (x - x_q) @ x_q.T / n

    def error(codes):
        return float((w @ x - (codes * scale[:, None]) @ x_q).pow(2).sum())
    gptq = gptq_round(w, hessian, scale, 64)
    gptaq = gptq_round(asymmetric_target(w, hessian, difference), hessian, scale, 64)
    half = gptq_round(asymmetric_target(w, hessian, difference, alpha=0.5), hessian, scale, 64)
    transposed = gptq_round(asymmetric_target(w, hessian, difference.T), hessian, scale, 64)  # the wrong way round
    assert gptaq.abs().max() <= 64 and torch.equal(gptaq, gptaq.round())
    assert error(gptaq) < error(half) < error(gptq)
    assert error(gptaq) < 0.5 * error(gptq) and error(gptaq) < 0.5 * error(transposed)


@pytest.mark.parametrize("groups", [1, 4])
def test_the_cross_gram_pairs_the_reference_columns_with_the_inputs_columns(groups):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 8)
    args = ((3, 3), (2, 1), (1, 0, 1, 2), (1, 1), groups)
    gram, _, count = conv_input_moments(x, *args)
    _, cross, cross_count = conv_input_moments(x, *args, error=x)
    assert count == cross_count
    torch.testing.assert_close(cross, gram, rtol=1e-5, atol=1e-5)  # float32 sums
    # 1x1, stride 1, no padding: the columns are the pixels, so the cross gram is sum over pixels of r c^T
    reference, other = torch.randn(2, 4, 5, 3), torch.randn(2, 4, 5, 3)
    cross = conv_input_moments(other, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), groups, error=reference)[1]
    per = 4 // groups
    for g in range(groups):
        r = reference[:, g * per:(g + 1) * per].permute(1, 0, 2, 3).reshape(per, -1).double()
        c = other[:, g * per:(g + 1) * per].permute(1, 0, 2, 3).reshape(per, -1).double()
        torch.testing.assert_close(cross[g], r @ c.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups,dilation", [(1, 1), (4, 1), (2, 2)])
def test_conv_input_moments_give_the_convolution_output_energy(groups, dilation):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 8)
    weight = torch.randn(8, 4 // groups, 3, 3)
    gram, _, count = conv_input_moments(x, (3, 3), (2, 1), (1, 0, 1, 2), (dilation, dilation), groups)
    out = F.conv2d(F.pad(x, (0, 2, 1, 1)), weight, stride=(2, 1), dilation=dilation, groups=groups)
    assert count == out.shape[0] * out.shape[2] * out.shape[3]
    per_group = weight.shape[0] // groups
    for g in range(groups):
        rows = weight[g * per_group:(g + 1) * per_group].reshape(per_group, -1).double()
        energy = torch.einsum("rk,km,rm->", rows, gram[g], rows)
        assert float(energy) == pytest.approx(float(out[:, g * per_group:(g + 1) * per_group].double().pow(2).sum()),
                                              rel=1e-4)


def test_auto_rounding_is_gptq_for_7bit_weights_and_nearest_for_8bit():
    assert Refinement().weight_rounding == "auto"
    assert Refinement().for_format(7).weight_rounding == "gptq"
    assert Refinement().for_format(8).weight_rounding == "nearest"
    assert Refinement("gptq").for_format(8).weight_rounding == "gptq"  # asked for explicitly: kept


def test_an_unknown_rounding_is_refused():
    with pytest.raises(ConfigError, match="QUANT.WEIGHT_ROUNDING 'adaround' is unknown"):
        Refinement("adaround")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny ResNet-18 quantized in the portable format: nearest, bias correction only, GPTQ, GPTQ with asymmetric
    calibration (and with none of its correction: alpha 0); with its
    prepared graph and calibration batches."""
    model = tiny_resnet18(SIZE)
    folder = tmp_path_factory.mktemp("refine")
    prepared = preprocess(export_onnx(model, str(folder / "fp32.onnx"), SIZE), str(folder / "prepared.onnx"))
    batches = [example_images(SIZE, 8, seed=s) for s in (20, 21)]
    cache = calibrate(prepared, batches, str(folder / "cal.json"))
    out = {}
    for name, refinement in (("nearest", NEAREST), ("bias", Refinement("nearest", True)),
                             ("gptq", Refinement("gptq")), ("gptaq", Refinement("gptaq")),
                             ("gptaq0", Refinement("gptaq", alpha=0.0))):
        out[name] = quantize_ptq(prepared, str(folder / f"{name}.onnx"), batches, fmt=QuantFormat(),
                                 calibration_cache=cache, refinement=refinement)
    return prepared, batches, out


def _outputs(path, names, batches):
    """The named tensors over ``batches``, the graph run node by node, concatenated."""
    model = onnx.load(path)
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    runs = [session.run(names, {feed: b.numpy()}) for b in batches]
    return [np.concatenate([r[i] for r in runs]) for i in range(len(names))]


@pytest.mark.parametrize("rounding", ["gptq", "gptaq"])
def test_refinement_keeps_the_portable_format_and_its_bound(files, rounding):
    _, _, paths = files
    nearest, gptq = onnx.load(paths["nearest"]), onnx.load(paths[rounding])
    assert [n.name for n, _ in int8_weighted_nodes(gptq)] == [n.name for n, _ in int8_weighted_nodes(nearest)]
    changed = 0
    for (node, weight_dq), (_, nearest_dq) in zip(int8_weighted_nodes(gptq), int8_weighted_nodes(nearest)):
        tensors = {t.name: t for t in gptq.graph.initializer}
        reference = {t.name: t for t in nearest.graph.initializer}
        codes = numpy_helper.to_array(tensors[weight_dq.input[0]])
        assert codes.dtype == np.int8 and np.abs(codes).max() <= 64, node.name
        np.testing.assert_array_equal(numpy_helper.to_array(tensors[weight_dq.input[1]]),
                                      numpy_helper.to_array(reference[nearest_dq.input[1]]))  # same scales
        changed += int(not np.array_equal(codes, numpy_helper.to_array(reference[nearest_dq.input[0]])))
    assert changed >= len(int8_weighted_nodes(gptq)) - 1  # GPTQ moved codes in (nearly) every layer
    assert accumulation_bounds(paths[rounding])["u8s8_pair_sum_max"] <= 32767


def test_asymmetric_calibration_moves_codes_and_without_its_correction_is_gptq(files):
    _, _, paths = files
    gptq, gptaq, none = (integer_weight_codes(onnx.load(paths[name])) for name in ("gptq", "gptaq", "gptaq0"))
    assert gptq.keys() == gptaq.keys() == none.keys()
    assert all(np.array_equal(gptq[name], none[name]) for name in gptq)  # alpha 0: exactly GPTQ
    # the first layer reads the image itself (the same in both graphs); deeper ones get corrected codes
    assert sum(not np.array_equal(gptq[name], gptaq[name]) for name in gptq) >= len(gptq) // 2


def test_bias_correction_brings_each_layers_channel_means_to_fp32(files):
    prepared, batches, paths = files
    fp32 = onnx.load(prepared)
    fp32_out = {n.name: n.output[0] for n in fp32.graph.node}
    model = onnx.load(paths["bias"])
    layers = [n for n, _ in int8_weighted_nodes(model)]
    last = layers[-1]  # the deepest integer layer: every shift upstream has reached it
    (reference,) = _outputs(prepared, [fp32_out[last.name]], batches)
    shifts = {}
    for name in ("nearest", "bias"):
        (got,) = _outputs(paths[name], [last.output[0]], batches)
        shifts[name] = np.abs((reference - got).mean(axis=(0, 2, 3))).mean()
    assert shifts["bias"] < 0.5 * shifts["nearest"]


def test_refinement_brings_the_embeddings_closer_to_fp32(files):
    prepared, batches, paths = files
    images = torch.cat([example_images(SIZE, 8, seed=s) for s in (30, 31)])  # not the calibration images
    fp32 = ort_session(prepared)
    reference = torch.from_numpy(fp32.run(None, {fp32.get_inputs()[0].name: images.numpy()})[0])

    def cosine(path):
        session = ort_session(path, optimized=False)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
        return float(F.cosine_similarity(reference, got).mean())
    assert cosine(paths["gptq"]) > cosine(paths["nearest"])


def test_the_quantizer_refines_once_and_reuses_the_codes_for_fallback_subsets(files, tmp_path):
    prepared, batches, paths = files
    quantize = ptq_quantizer(prepared, batches, "minmax", QuantFormat(), 99.999, refinement=Refinement())
    subset = quantize(str(tmp_path / "subset.onnx"), exclude=[])  # the full model first: GPTQ runs here
    full_codes = integer_weight_codes(onnx.load(subset))
    assert full_codes.keys() == integer_weight_codes(onnx.load(paths["gptq"])).keys()
    first = next(iter(full_codes))
    fallback = integer_weight_codes(onnx.load(quantize(str(tmp_path / "fallback.onnx"), exclude=[first])))
    assert first not in fallback and fallback.keys() == full_codes.keys() - {first}
    assert all(np.array_equal(fallback[name], full_codes[name]) for name in fallback)
    alone = integer_weight_codes(onnx.load(quantize(str(tmp_path / "alone.onnx"), only=[first])))
    assert list(alone) == [first] and np.array_equal(alone[first], full_codes[first])


def test_a_subset_asked_first_still_gets_the_all_int8_codes(files, tmp_path):
    prepared, batches, paths = files
    quantize = ptq_quantizer(prepared, batches, "minmax", QuantFormat(), 99.999, refinement=Refinement())
    layers = list(integer_weight_codes(onnx.load(paths["gptq"])))
    alone = integer_weight_codes(onnx.load(quantize(str(tmp_path / "alone.onnx"), only=[layers[-1]])))
    reference = integer_weight_codes(onnx.load(quantize(str(tmp_path / "full.onnx"))))
    assert np.array_equal(alone[layers[-1]], reference[layers[-1]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.onnx", "full.onnx"]
