"""Golden values (by hand or by an independent loop formula) and properties of every distillation loss."""

import math
from itertools import permutations

import pytest
import torch

from compressreid.distill import DISTILL_LOSSES, DistillView, ModelInfo, build_distill_loss
from compressreid.distill.losses import (PKT, EmbeddingRegression, FeatureMapDistill, ListwiseRanking, LogitKD,
                                         RKDAngle, RKDDistance, SimilarityPreserving)
from compressreid.distill.losses.feature_map import partial_l2, resize_to
from compressreid.distill.registry import gaussian_negative_mean
from compressreid.config import get_cfg
from compressreid.errors import ConfigError
from compressreid.modeling import FeatureInfo


def view(embedding=None, logits=None, features=None):
    if embedding is None:
        embedding = torch.zeros(len(logits[0]), 2)
    return DistillView(embedding, logits, features or {})


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- independent references: plain Python over lists ------------------------------------------------------------


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def dist(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def huber(x):
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def ref_rkd_distance(s, t):
    pairs = list(permutations(range(len(s)), 2))
    ds = [dist(s[i], s[j]) for i, j in pairs]
    dt = [dist(t[i], t[j]) for i, j in pairs]
    ms, mt = sum(ds) / len(ds), sum(dt) / len(dt)
    return sum(huber(a / ms - b / mt) for a, b in zip(ds, dt)) / len(pairs)


def ref_angle(x, i, j, k):
    u = [a - b for a, b in zip(x[i], x[j])]
    v = [a - b for a, b in zip(x[k], x[j])]
    return cos(u, v)


def ref_rkd_angle(s, t):
    triples = list(permutations(range(len(s)), 3))
    return sum(huber(ref_angle(s, *tr) - ref_angle(t, *tr)) for tr in triples) / len(triples)


def ref_sp(s, t):
    def gram(x):
        g = [[sum(a * b for a, b in zip(xi, xj)) for xj in x] for xi in x]
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]

    gs, gt = gram(s), gram(t)
    b = len(s)
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def ref_pkt(s, t):
    def probs(x, i):
        k = [(cos(x[i], x[j]) + 1) / 2 for j in range(len(x)) if j != i]
        return [v / sum(k) for v in k]

    return sum(kl(probs(t, i), probs(s, i)) for i in range(len(s))) / len(s)


def ref_listwise(s, t, tau_s, tau_t):
    def probs(x, i, tau):
        return softmax([cos(x[i], x[j]) / tau for j in range(len(x)) if j != i])

    return sum(kl(probs(t, i, tau_t), probs(s, i, tau_s)) for i in range(len(s))) / len(s)


# -- logit KD ----------------------------------------------------------------------------------------------------


def test_kl_golden_by_hand():
    # T=1, teacher logits (ln 3, 0) -> p = (3/4, 1/4); student (0, 0) -> q = (1/2, 1/2)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # 0.130812
    loss = LogitKD(temperature=1.0)(view(logits=[torch.tensor([[0.0, 0.0]])]),
                                    view(logits=[torch.tensor([[math.log(3.0), 0.0]])]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.130812, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_golden_batch_with_temperature(temperature):
    s, t = rand(3, 5, seed=1) * 3, rand(3, 5, seed=2) * 3
    expected = sum(kl(softmax([x / temperature for x in t[b].tolist()]),
                      softmax([x / temperature for x in s[b].tolist()])) for b in range(3)) / 3 * temperature**2
    loss = LogitKD(temperature, "kl", scale=2.0)(view(logits=[s]), view(logits=[t]))
    assert loss.item() == pytest.approx(2.0 * expected, rel=1e-5)


def test_js_golden():
    s, t, temperature = rand(3, 4, seed=3) * 2, rand(3, 4, seed=4) * 2, 2.0
    total = 0.0
    for b in range(3):
        p = softmax([x / temperature for x in t[b].tolist()])
        q = softmax([x / temperature for x in s[b].tolist()])
        m = [(a + c) / 2 for a, c in zip(p, q)]
        total += 0.5 * kl(p, m) + 0.5 * kl(q, m)
    loss = LogitKD(temperature, "js")(view(logits=[s]), view(logits=[t]))
    assert loss.item() == pytest.approx(total / 3 * temperature**2, rel=1e-5)
    swapped = LogitKD(temperature, "js")(view(logits=[t]), view(logits=[s]))
    assert swapped.item() == pytest.approx(loss.item(), rel=1e-5)  # symmetric, unlike KL


def test_kd_invariant_to_a_per_row_logit_shift():
    s, t = rand(4, 6, seed=5), rand(4, 6, seed=6)
    shift = torch.arange(4.0).unsqueeze(1) * 10
    kd = LogitKD(3.0)
    assert kd(view(logits=[s + shift]), view(logits=[t])).item() == pytest.approx(
        kd(view(logits=[s]), view(logits=[t])).item(), rel=1e-5)


def test_kd_single_branch_student_learns_from_the_mean_of_teacher_branches():
    s, t1, t2 = rand(2, 3, seed=7), rand(2, 3, seed=8), rand(2, 3, seed=9)
    kd = LogitKD(2.0)
    assert kd(view(logits=[s]), view(logits=[t1, t2])).item() == pytest.approx(
        kd(view(logits=[s]), view(logits=[(t1 + t2) / 2])).item(), rel=1e-6)
    with pytest.raises(ConfigError, match="cannot pair"):
        kd(view(logits=[s, s]), view(logits=[t1, t2, t2]))


def test_kd_refuses_missing_or_mismatched_logits():
    kd = LogitKD()
    with pytest.raises(ConfigError, match="student returned none"):
        kd(view(embedding=torch.zeros(2, 2)), view(logits=[torch.zeros(2, 3)]))
    with pytest.raises(ConfigError, match="different identity sets"):
        kd(view(logits=[torch.zeros(2, 3)]), view(logits=[torch.zeros(2, 4)]))


def test_kd_options_are_validated():
    with pytest.raises(ConfigError, match="DIVERGENCE"):
        LogitKD(divergence="mse")
    with pytest.raises(ConfigError, match="TEMPERATURE"):
        LogitKD(temperature=0.0)


# -- shared classes check ------------------------------------------------------------------------------------------


def info(name="student", dim=4, classes=5, ids=(("Market1501",), False), note=""):
    taps = (FeatureInfo("layer1", 3, 4), FeatureInfo("layer2", 6, 8))
    return ModelInfo(name, dim, taps, classes, ids, note)


def test_logit_kd_refuses_a_teacher_trained_on_another_identity_set():
    node = get_cfg().DISTILL.LOSSES
    with pytest.raises(ConfigError, match="trained on identities .*DukeMTMC.*same identity set"):
        build_distill_loss("LogitKD", node, info(), info("teacher 0", ids=(("DukeMTMC",), False)))
    with pytest.raises(ConfigError, match="classifies 7 identities .*shape.*the student 5"):
        build_distill_loss("LogitKD", node, info(), info("teacher 0", classes=7, note="its checkpoint ... shape (7, 4)"))
    with pytest.raises(ConfigError, match="student has no classifier"):
        build_distill_loss("LogitKD", node, info(classes=0), info("teacher 0"))
    assert isinstance(build_distill_loss("LogitKD", node, info(), info("teacher 0")), LogitKD)


@pytest.mark.parametrize("name", ["EmbeddingRegression", "RKDDistance", "RKDAngle", "SimilarityPreserving", "PKT",
                                  "ListwiseRanking", "FeatureMapDistill"])
def test_other_losses_need_no_shared_classes(name):
    teacher = info("teacher 0", dim=6, classes=0, ids=(("DukeMTMC",), False))
    loss = build_distill_loss(name, get_cfg().DISTILL.LOSSES, info(classes=0), teacher)
    assert not loss.needs_shared_classes


def test_every_registered_loss_has_a_config_section():
    node = get_cfg().DISTILL.LOSSES
    for name in DISTILL_LOSSES:
        assert DISTILL_LOSSES.get(name).config_key in node, name


# -- embedding regression ------------------------------------------------------------------------------------------


def test_embedding_cosine_and_l2_golden_by_hand():
    s = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 1.0], [3.0, 4.0]])
    cosine = EmbeddingRegression(2, 2, "cosine")(view(s), view(t))
    assert cosine.item() == pytest.approx(((1 - 1 / math.sqrt(2)) + 0.0) / 2, rel=1e-6)
    l2 = EmbeddingRegression(2, 2, "l2")(view(s), view(t))
    assert l2.item() == pytest.approx(1.0 / 4, rel=1e-6)  # one unit squared error over 4 entries


def test_embedding_projection_when_dims_differ_and_identity_otherwise():
    same = EmbeddingRegression(4, 4, projection="auto")
    assert isinstance(same.projection, torch.nn.Identity) and not list(same.parameters())
    other = EmbeddingRegression(4, 6, projection="auto")
    assert [p.shape for p in other.parameters()] == [torch.Size([6, 4])]
    assert len(list(EmbeddingRegression(4, 4, projection="linear").parameters())) == 1
    with pytest.raises(ConfigError, match="EMBEDDING_DIM to 6"):
        EmbeddingRegression(4, 6, projection="none")
    s, t = rand(3, 4, seed=10, ).requires_grad_(), rand(3, 6, seed=11)
    other(view(s), view(t)).backward()
    assert other.projection.weight.grad is not None and s.grad.abs().sum() > 0


def test_embedding_cosine_is_invariant_to_student_scale():
    s, t = rand(5, 4, seed=12), rand(5, 4, seed=13)
    loss = EmbeddingRegression(4, 4, "cosine")
    assert loss(view(s * 3.0), view(t)).item() == pytest.approx(loss(view(s), view(t)).item(), rel=1e-5)


# -- relation losses -----------------------------------------------------------------------------------------------


def test_rkd_distance_golden_by_hand():
    # teacher (0,0),(1,0),(0,1): d01=1, d02=1, d12=sqrt2, mean (2+sqrt2)/3
    # student (0,0),(1,0),(2,0): d01=1, d02=2, d12=1,     mean 4/3
    mt = (2 + math.sqrt(2)) / 3
    diffs = [0.75 - 1 / mt, 1.5 - 1 / mt, 0.75 - math.sqrt(2) / mt]  # each |x| < 1 -> 0.5 x^2
    expected = sum(0.5 * d * d for d in diffs) / 3
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert RKDDistance()(view(s), view(t)).item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.10754, abs=1e-5)


def test_rkd_distance_golden_random_and_huber_linear_part():
    s, t = rand(5, 3, seed=14), rand(5, 4, seed=15)
    assert RKDDistance(scale=3.0)(view(s), view(t)).item() == pytest.approx(
        3.0 * ref_rkd_distance(s.tolist(), t.tolist()), rel=1e-5)
    # one far outlier pushes some normalised differences past 1, into Huber's linear part
    s[0] = 40.0
    assert RKDDistance()(view(s), view(t)).item() == pytest.approx(ref_rkd_distance(s.tolist(), t.tolist()), rel=1e-5)


def test_rkd_angle_golden_by_hand_and_random():
    # right angle at x0 for the teacher, straight line for the student: at each vertex the cosines are
    # teacher (0,0)/(1,0)/(0,1): angle at 0 is 90 deg (cos 0), at 1 and 2 it is 45 deg (cos 1/sqrt2)
    # student (0,0),(1,0),(2,0):  at 0: cos 1, at 1: cos -1, at 2: cos 1
    # 6 ordered triples: each vertex appears twice (i,k swapped), same cosine
    c = 1 / math.sqrt(2)
    expected = 2 * (huber(1 - 0) + huber(-1 - c) + huber(1 - c)) / 6
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert RKDAngle()(view(s), view(t)).item() == pytest.approx(expected, rel=1e-5)
    s, t = rand(5, 3, seed=16), rand(5, 6, seed=17)
    assert RKDAngle()(view(s), view(t)).item() == pytest.approx(ref_rkd_angle(s.tolist(), t.tolist()), rel=1e-5)


def test_sp_golden_by_hand_and_random():
    # student Gram = I; teacher (1,0),(1,1): Gram [[1,1],[1,2]], rows normalised (1,1)/sqrt2, (1,2)/sqrt5
    r2, r5 = math.sqrt(2), math.sqrt(5)
    expected = ((1 - 1 / r2) ** 2 + (1 / r2) ** 2 + (1 / r5) ** 2 + (1 - 2 / r5) ** 2) / 4
    s, t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert SimilarityPreserving()(view(s), view(t)).item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.199233, abs=1e-5)
    s, t = rand(4, 3, seed=18), rand(4, 7, seed=19)
    assert SimilarityPreserving()(view(s), view(t)).item() == pytest.approx(ref_sp(s.tolist(), t.tolist()), rel=1e-5)


def test_sp_on_tapped_feature_maps_sums_stage_terms():
    s1, s2, t1, t2 = rand(3, 2, 4, 2, seed=20), rand(3, 5, 2, 1, seed=21), rand(3, 3, 4, 2, seed=22), rand(3, 4, 1, 1, seed=23)
    sp = SimilarityPreserving([("a", "x"), ("b", "y")], scale=2.0)
    assert sp.feature_taps.student == ("a", "b") and sp.feature_taps.teacher == ("x", "y")
    value = sp(view(torch.zeros(3, 2), features={"a": s1, "b": s2}), view(torch.zeros(3, 2), features={"x": t1, "y": t2}))
    expected = ref_sp(s1.flatten(1).tolist(), t1.flatten(1).tolist()) + ref_sp(s2.flatten(1).tolist(), t2.flatten(1).tolist())
    assert value.item() == pytest.approx(2.0 * expected, rel=1e-5)


def test_sp_stage_indices_resolve_from_infos():
    node = get_cfg().DISTILL.LOSSES.SP.clone()
    node.STAGES = [-1]
    sp = SimilarityPreserving.from_config(node, info(), info("teacher 0"))
    assert sp.pairs == [("layer2", "layer2")]
    node.STAGES = [5]
    with pytest.raises(ConfigError, match="stage index 5 is out of range for the student"):
        SimilarityPreserving.from_config(node, info(), info("teacher 0"))


def test_pkt_golden_by_hand_and_random():
    # student (1,0),(0,1),(-1,0): kernel (cos+1)/2 -> anchor 0: K01=0.5, K02=0 -> p=(1,0); anchor 1: (0.5,0.5); anchor 2: (0,1)
    # teacher (1,0),(1,1),(0,1):  cos01=cos12=1/sqrt2, cos02=0 -> anchor 0: K=(a, 0.5), a=(1+1/sqrt2)/2
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    a = (1 + 1 / math.sqrt(2)) / 2
    p0 = [a / (a + 0.5), 0.5 / (a + 0.5)]  # teacher anchor 0 (and, mirrored, anchor 2)
    eps = 1e-7
    kl0 = sum(p * (math.log(p + eps) - math.log(q + eps)) for p, q in zip(p0, [1.0, 0.0]))
    kl1 = 0.0  # teacher anchor 1: K=(a, a) -> (1/2, 1/2), same as the student's
    expected = (2 * kl0 + kl1) / 3
    assert PKT()(view(s), view(t)).item() == pytest.approx(expected, rel=1e-4)
    s, t = rand(5, 3, seed=24), rand(5, 4, seed=25)
    assert PKT()(view(s), view(t)).item() == pytest.approx(ref_pkt(s.tolist(), t.tolist()), rel=1e-4)


@pytest.mark.parametrize("tau_s,tau_t", [(0.1, 0.1), (0.5, 0.2)])
def test_listwise_golden(tau_s, tau_t):
    s, t = rand(5, 3, seed=26), rand(5, 8, seed=27)
    loss = ListwiseRanking(tau_s, tau_t)(view(s), view(t))
    assert loss.item() == pytest.approx(ref_listwise(s.tolist(), t.tolist(), tau_s, tau_t), rel=1e-4)


def test_listwise_validates_temperatures():
    with pytest.raises(ConfigError, match="LISTWISE"):
        ListwiseRanking(0.0, 0.1)


# -- properties shared by the embedding-level losses ---------------------------------------------------------------

EMBEDDING_LOSSES = {
    "EmbeddingRegression-cos": lambda: EmbeddingRegression(4, 4, "cosine"),
    "EmbeddingRegression-l2": lambda: EmbeddingRegression(4, 4, "l2"),
    "RKDDistance": RKDDistance,
    "RKDAngle": RKDAngle,
    "SimilarityPreserving": SimilarityPreserving,
    "PKT": PKT,
    "ListwiseRanking": ListwiseRanking,
}


@pytest.mark.parametrize("name", sorted(EMBEDDING_LOSSES))
def test_zero_when_student_equals_teacher(name):
    x = rand(6, 4, seed=28)
    assert EMBEDDING_LOSSES[name]()(view(x), view(x.clone())).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("divergence", ["kl", "js"])
def test_kd_zero_when_equal(divergence):
    x = rand(3, 5, seed=29)
    assert LogitKD(4.0, divergence)(view(logits=[x]), view(logits=[x.clone()])).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(EMBEDDING_LOSSES))
def test_gradient_flows_to_the_student_only(name):
    s, t = rand(6, 4, seed=30).requires_grad_(), rand(6, 4, seed=31).requires_grad_()
    EMBEDDING_LOSSES[name]()(view(s), view(t)).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kd_gradient_flows_to_the_student_only():
    s, t = rand(3, 5, seed=32).requires_grad_(), rand(3, 5, seed=33).requires_grad_()
    LogitKD(4.0)(view(logits=[s]), view(logits=[t])).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


@pytest.mark.parametrize("name", ["RKDDistance", "RKDAngle", "SimilarityPreserving"])
def test_invariant_to_a_global_scale_of_either_side(name):
    s, t = rand(6, 4, seed=34), rand(6, 5, seed=35)
    loss = EMBEDDING_LOSSES[name]()
    base = loss(view(s), view(t)).item()
    assert loss(view(s * 7.0), view(t)).item() == pytest.approx(base, rel=1e-4)
    assert loss(view(s), view(t * 0.2)).item() == pytest.approx(base, rel=1e-4)


@pytest.mark.parametrize("name", ["RKDDistance", "RKDAngle"])
def test_rkd_invariant_to_translation(name):
    s, t = rand(6, 4, seed=36), rand(6, 5, seed=37)
    loss = EMBEDDING_LOSSES[name]()
    assert loss(view(s + 3.0), view(t)).item() == pytest.approx(loss(view(s), view(t)).item(), rel=1e-4)


@pytest.mark.parametrize("name", ["PKT", "ListwiseRanking"])
def test_cosine_based_losses_ignore_per_sample_scale(name):
    s, t = rand(6, 4, seed=38), rand(6, 5, seed=39)
    scales = torch.linspace(0.5, 5.0, 6).unsqueeze(1)
    loss = EMBEDDING_LOSSES[name]()
    assert loss(view(s * scales), view(t)).item() == pytest.approx(loss(view(s), view(t)).item(), rel=1e-4)


def test_relation_losses_survive_tiny_batches():
    for name in ("RKDDistance", "RKDAngle", "PKT", "ListwiseRanking"):
        s = rand(1, 4, seed=40).requires_grad_()
        value = EMBEDDING_LOSSES[name]()(view(s), view(rand(1, 4, seed=41)))
        assert value.item() == 0.0
        value.backward()


# -- feature maps --------------------------------------------------------------------------------------------------


def fmap_loss(mode, s_channels=1, t_channels=1, margin=None):
    loss = FeatureMapDistill([(FeatureInfo("s", s_channels, 8), FeatureInfo("t", t_channels, 8))], mode,
                             [margin] if margin is not None else None)
    conv, bn = loss.adapters[0]
    with torch.no_grad():  # make the adapter exactly x -> 2x so values are computable by hand
        conv.weight.fill_(2.0)
        bn.eps = 0.0
    loss.eval()  # BN with running stats (0, 1): identity
    return loss


def test_fitnet_golden_by_hand():
    s = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]]]])
    t = torch.tensor([[[[2.0, 3.0], [1.0, -2.0]]]])
    # adapter(s) = 2s = (2, 4, 0, -2); squared errors (0, 1, 1, 0), mean 0.5
    loss = fmap_loss("fitnet")(view(torch.zeros(1, 2), features={"s": s}), view(torch.zeros(1, 2), features={"t": t}))
    assert loss.item() == pytest.approx(0.5, rel=1e-6)


def test_overhaul_golden_by_hand():
    s = torch.tensor([-0.5, 0.25, 0.05, 0.5]).view(1, 1, 2, 2)  # adapter doubles: (-1, 0.5, 0.1, 1)
    t = torch.tensor([-3.0, 0.0, -0.2, 2.0]).view(1, 1, 2, 2)
    # margin -0.5: target (-0.5, 0, -0.2, 2); kept where s > t or t > 0: entries 2, 3, 4
    # squared errors 0.25 + 0.09 + 1 = 1.34 over 4 entries
    loss = fmap_loss("overhaul", margin=torch.tensor([-0.5]))
    value = loss(view(torch.zeros(1, 2), features={"s": s}), view(torch.zeros(1, 2), features={"t": t}))
    assert value.item() == pytest.approx(1.34 / 4, rel=1e-5)


def test_partial_l2_skips_only_below_a_non_positive_target():
    s = torch.tensor([-2.0, -1.0, 1.0, 3.0])
    t = torch.tensor([-1.0, -1.0, 2.0, 2.0])
    assert partial_l2(s, t).item() == pytest.approx((0 + 0 + 1 + 1) / 4)


def test_heo_margin_golden():
    def reference(mean, std):
        a = -mean / std
        cdf = 0.5 * (1 + math.erf(a / math.sqrt(2)))
        pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
        return mean - std * pdf / cdf if cdf > 1e-3 else -3 * std

    assert reference(0.0, 1.0) == pytest.approx(-math.sqrt(2 / math.pi))  # half-normal mean
    means, stds = torch.tensor([0.0, 1.0, -2.0, 5.0]), torch.tensor([1.0, 2.0, 0.5, 1.0])
    got = gaussian_negative_mean(means, stds)
    for g, m, s in zip(got.tolist(), means.tolist(), stds.tolist()):
        assert g == pytest.approx(reference(m, s), rel=1e-5)
    assert got[3].item() == pytest.approx(-3.0)  # mean 5 std 1: almost no negative mass


def test_feature_map_resizes_the_teacher_map_and_adapts_channels():
    loss = FeatureMapDistill([(FeatureInfo("s", 3, 16), FeatureInfo("t", 5, 8))], "fitnet")
    s = rand(2, 3, 4, 2, seed=42).requires_grad_()
    t = torch.full((2, 5, 8, 4), 1.5).requires_grad_()
    value = loss(view(torch.zeros(2, 2), features={"s": s}), view(torch.zeros(2, 2), features={"t": t}))
    value.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    assert all(p.grad is not None for p in loss.adapters.parameters())
    assert resize_to(t.detach(), (4, 2)).shape == (2, 5, 4, 2)
    assert torch.allclose(resize_to(t.detach(), (4, 2)), torch.full((2, 5, 4, 2), 1.5))


def test_feature_map_config_pairs_stages_and_validates():
    node = get_cfg().DISTILL.LOSSES.FEATURE.clone()
    node.STAGES, node.TEACHER_STAGES = [0, -1], [1, 1]
    loss = FeatureMapDistill.from_config(node, info(), info("teacher 0"))
    assert loss.pairs == [("layer1", "layer2"), ("layer2", "layer2")]
    assert loss.feature_taps.student == ("layer1", "layer2") and loss.feature_taps.teacher == ("layer2", "layer2")
    assert [a[0].weight.shape[:2] for a in loss.adapters] == [(6, 3), (6, 6)]
    node.TEACHER_STAGES = [1]
    with pytest.raises(ConfigError, match="TEACHER_STAGES"):
        FeatureMapDistill.from_config(node, info(), info("teacher 0"))
    with pytest.raises(ConfigError, match="MODE"):
        FeatureMapDistill([(FeatureInfo("s", 1, 8), FeatureInfo("t", 1, 8))], "attention")
