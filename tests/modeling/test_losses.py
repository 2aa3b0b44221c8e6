"""Golden values, computed by hand, for the supervised losses, the margin classifiers and the LR schedule."""

import math

import pytest
import torch

from compressreid.config import get_cfg
from compressreid.engine.optim import lr_factor
from compressreid.errors import ConfigError
from compressreid.modeling import BranchOutput, ModelOutput
from compressreid.modeling.heads import EmbeddingHead
from compressreid.modeling.layers.classifiers import (ArcSoftmax, CircleSoftmax, CosSoftmax, LinearLogits,
                                                      build_classifier)
from compressreid.modeling.losses import LOSSES, ReIDCriterion, build_criterion
from compressreid.modeling.losses.metric_losses import CircleLoss, Cosface, TripletLoss
from compressreid.modeling.losses.softmax_losses import CrossEntropyLoss

SQRT2, SQRT5, SQRT10 = math.sqrt(2), math.sqrt(5), math.sqrt(10)

# Four 2-D features, two identities:  x0=(0,0), x1=(0,1) are id 0;  x2=(1,1), x3=(3,0) are id 1.
# Pairwise distances: d01=1, d02=sqrt2, d03=3, d12=1, d13=sqrt10, d23=sqrt5.
POINTS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
POINT_IDS = torch.tensor([0, 0, 1, 1])

# Four unit vectors, two identities: u0=(1,0), u1=(0.6,0.8) are id 0; u2=(0,1), u3=(-0.6,0.8) are id 1.
# Cosines: c01=0.6, c02=0, c03=-0.6, c12=0.8, c13=0.28, c23=0.8.
UNITS = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])
# anchor -> (its one positive cosine, its two negative cosines)
UNIT_PAIRS = [(0.6, (0.0, -0.6)), (0.6, (0.8, 0.28)), (0.8, (0.0, 0.8)), (0.8, (-0.6, 0.28))]


def branch(feature=None, logits=None):
    feature = feature if feature is not None else torch.zeros(len(logits), 2)
    return BranchOutput(embedding=feature, feature=feature, logits=logits)


def softplus(x):
    return math.log1p(math.exp(x))


# -- triplet ----------------------------------------------------------------------------------------------------


def test_batch_hard_triplet_with_margin():
    # anchor: hardest positive, hardest negative, hinge max(0, dp - dn + 0.3)
    # x0: dp=1,     dn=min(sqrt2, 3)=sqrt2     -> 1 - 1.414 + 0.3 < 0 -> 0
    # x1: dp=1,     dn=min(1, sqrt10)=1        -> 0.3
    # x2: dp=sqrt5, dn=min(sqrt2, 1)=1         -> sqrt5 - 0.7
    # x3: dp=sqrt5, dn=min(3, sqrt10)=3        -> sqrt5 - 2.7 < 0 -> 0
    expected = (0.3 + (SQRT5 - 0.7)) / 4
    loss = TripletLoss(margin=0.3, norm_feat=False, hard_mining=True)(branch(POINTS), POINT_IDS)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx((SQRT5 - 0.4) / 4, rel=1e-5)


def test_batch_hard_triplet_soft_margin():
    # margin 0: mean of log(1 + exp(dp - dn)) over the same hardest pairs
    expected = (softplus(1 - SQRT2) + softplus(0.0) + softplus(SQRT5 - 1) + softplus(SQRT5 - 3)) / 4
    loss = TripletLoss(margin=0.0, hard_mining=True)(branch(POINTS), POINT_IDS)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_weighted_triplet():
    # softmax-weighted mining (fast-reid's HARD_MINING False): positives weighted by exp(d) (the anchor itself,
    # at distance 0, included), negatives by exp(-d).
    def weighted(distances, sign):
        weights = [math.exp(sign * d) for d in distances]
        return sum(d * w for d, w in zip(distances, weights)) / sum(weights)

    anchors = [  # (positive distances incl. self, negative distances)
        ([0.0, 1.0], [SQRT2, 3.0]),
        ([0.0, 1.0], [1.0, SQRT10]),
        ([0.0, SQRT5], [SQRT2, 1.0]),
        ([0.0, SQRT5], [3.0, SQRT10]),
    ]
    hinges = [max(0.0, weighted(pos, +1) - weighted(neg, -1) + 0.3) for pos, neg in anchors]
    loss = TripletLoss(margin=0.3, hard_mining=False)(branch(POINTS), POINT_IDS)
    assert loss.item() == pytest.approx(sum(hinges) / 4, rel=1e-5)


def test_triplet_norm_feat_uses_unit_vectors():
    # scaling one feature must not change the loss once features are L2-normalised
    scaled = UNITS.clone()
    scaled[3] *= 7.0
    loss_fn = TripletLoss(margin=0.3, norm_feat=True)
    unit_loss = loss_fn(branch(UNITS), POINT_IDS).item()
    assert loss_fn(branch(scaled), POINT_IDS).item() == pytest.approx(unit_loss, rel=1e-5)
    # on unit vectors distance = sqrt(2 - 2 cos): x0: dp=sqrt(0.8), dn=min(sqrt2, sqrt3.2) -> 0.894-1.414+0.3 < 0
    # x1: dp=sqrt(0.8), dn=min(sqrt0.4, sqrt1.44) -> 0.894 - 0.632 + 0.3;  x2: dp=sqrt0.4, dn=min(sqrt2, sqrt0.4)
    # -> 0.3;  x3: dp=sqrt0.4, dn=min(sqrt3.2, sqrt1.44) -> 0.632 - 1.2 + 0.3 < 0
    expected = ((math.sqrt(0.8) - math.sqrt(0.4) + 0.3) + 0.3) / 4
    assert loss_fn(branch(UNITS), POINT_IDS).item() == pytest.approx(expected, rel=1e-5)


def test_triplet_scale_weights_the_loss():
    base = TripletLoss(margin=0.3)(branch(POINTS), POINT_IDS)
    assert TripletLoss(margin=0.3, scale=2.5)(branch(POINTS), POINT_IDS).item() == pytest.approx(2.5 * base.item())


def test_triplet_gradient_is_finite_with_duplicate_features():
    features = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    TripletLoss(margin=0.3)(branch(features), POINT_IDS).backward()
    assert torch.isfinite(features.grad).all()


# -- pairwise circle and cosface --------------------------------------------------------------------------------


def circle_by_hand(margin, gamma):
    total = 0.0
    for p, negatives in UNIT_PAIRS:
        logit_p = -gamma * max(0.0, 1 + margin - p) * (p - (1 - margin))
        logit_n = [gamma * max(0.0, n + margin) * (n - margin) for n in negatives]
        total += softplus(logit_p + math.log(sum(math.exp(v) for v in logit_n)))
    return total / len(UNIT_PAIRS)


def cosface_by_hand(margin, gamma):
    total = 0.0
    for p, negatives in UNIT_PAIRS:
        logit_n = [gamma * (n + margin) for n in negatives]
        total += softplus(-gamma * p + math.log(sum(math.exp(v) for v in logit_n)))
    return total / len(UNIT_PAIRS)


def test_circle_loss_golden():
    # anchor 0 spelled out (m=0.25, gamma=2): positive 0.6 -> -2 * max(0, 1.25 - 0.6) * (0.6 - 0.75) = 0.195;
    # negative 0 -> 2 * 0.25 * (0 - 0.25) = -0.125; negative -0.6 -> weight max(0, -0.35) = 0 -> logit 0.
    anchor0 = softplus(0.195 + math.log(math.exp(-0.125) + math.exp(0.0)))
    assert circle_by_hand(0.25, 2.0) * 4 == pytest.approx(anchor0 + sum(
        softplus(-2 * max(0, 1.25 - p) * (p - 0.75) + math.log(sum(math.exp(2 * max(0, n + 0.25) * (n - 0.25))
                                                                   for n in negatives)))
        for p, negatives in UNIT_PAIRS[1:]))
    features = UNITS * torch.tensor([[1.0], [3.0], [0.5], [2.0]])  # the loss normalises its input
    loss = CircleLoss(margin=0.25, gamma=2.0, scale=1.0)(branch(features), POINT_IDS)
    assert loss.item() == pytest.approx(circle_by_hand(0.25, 2.0), rel=1e-5)
    assert CircleLoss(0.25, 2.0, scale=4.0)(branch(features), POINT_IDS).item() == pytest.approx(4 * loss.item())


def test_cosface_loss_golden():
    # anchor 0 spelled out (m=0.25, gamma=2): softplus(-2 * 0.6 + log(exp(2 * (0 + 0.25)) + exp(2 * (-0.6 + 0.25))))
    anchor0 = softplus(-1.2 + math.log(math.exp(0.5) + math.exp(-0.7)))
    assert cosface_by_hand(0.25, 2.0) == pytest.approx((anchor0 + sum(
        softplus(-2 * p + math.log(sum(math.exp(2 * (n + 0.25)) for n in negatives)))
        for p, negatives in UNIT_PAIRS[1:])) / 4)
    loss = Cosface(margin=0.25, gamma=2.0, scale=1.0)(branch(UNITS * 5), POINT_IDS)
    assert loss.item() == pytest.approx(cosface_by_hand(0.25, 2.0), rel=1e-5)


def test_pairwise_losses_stay_finite_at_default_gamma():
    for name in ("CircleLoss", "Cosface"):
        loss = LOSSES.get(name).from_config(get_cfg())(branch(UNITS), POINT_IDS)
        assert torch.isfinite(loss) and loss.item() > 0


# -- cross-entropy ----------------------------------------------------------------------------------------------


def test_label_smoothed_cross_entropy_matches_formula():
    logits = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
    targets = [0, 1]
    eps, num_classes = 0.1, 3
    expected = 0.0
    for row, target in zip(logits, targets):
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        # smoothed target distribution: (1 - eps) on the label plus eps spread uniformly over all classes
        expected += -(1 - eps) * log_p[target] - eps / num_classes * sum(log_p)
    expected /= len(logits)
    loss = CrossEntropyLoss(epsilon=eps, scale=1.0)(branch(logits=torch.tensor(logits)), torch.tensor(targets))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_without_smoothing_and_scale():
    logits = torch.tensor([[1.0, 2.0]])
    expected = -(2.0 - math.log(math.exp(1.0) + math.exp(2.0)))  # -log p(class 1)
    loss = CrossEntropyLoss(epsilon=0.0, scale=0.5)(branch(logits=logits), torch.tensor([1]))
    assert loss.item() == pytest.approx(0.5 * expected, rel=1e-6)


def test_cross_entropy_needs_a_classifier():
    with pytest.raises(ConfigError, match="0 classes"):
        CrossEntropyLoss()(branch(UNITS), POINT_IDS)


# -- criterion --------------------------------------------------------------------------------------------------


def criterion_cfg():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface")
    cfg.MODEL.LOSSES.CE.EPSILON = 0.0
    cfg.MODEL.LOSSES.CE.SCALE = 0.5
    cfg.MODEL.LOSSES.TRI.SCALE = 2.0
    cfg.MODEL.LOSSES.CIRCLE.GAMMA = 2
    cfg.MODEL.LOSSES.COSFACE.GAMMA = 2
    cfg.MODEL.LOSSES.COSFACE.SCALE = 3.0
    return cfg


def test_build_criterion_weights_each_term():
    criterion = build_criterion(criterion_cfg())
    assert isinstance(criterion, ReIDCriterion)
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ce_by_hand = -(1.0 - math.log(math.e + 1.0))  # every row puts logit 1 on its label, 0 elsewhere
    triplet_on_units = TripletLoss(margin=0.3)(branch(UNITS), POINT_IDS).item()
    terms = criterion(ModelOutput(UNITS, [BranchOutput(UNITS, UNITS, logits)]), POINT_IDS)
    assert list(terms) == ["CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface"]
    assert terms["CrossEntropyLoss"].item() == pytest.approx(0.5 * ce_by_hand, rel=1e-5)
    assert terms["TripletLoss"].item() == pytest.approx(2.0 * triplet_on_units, rel=1e-5)
    assert terms["CircleLoss"].item() == pytest.approx(circle_by_hand(0.25, 2.0), rel=1e-5)
    assert terms["Cosface"].item() == pytest.approx(3.0 * cosface_by_hand(0.25, 2.0), rel=1e-5)


def test_criterion_sums_over_branches():
    criterion = ReIDCriterion([("TripletLoss", TripletLoss(margin=0.3))])
    one = criterion(ModelOutput(POINTS, [branch(POINTS)]), POINT_IDS)["TripletLoss"]
    two = criterion(ModelOutput(POINTS, [branch(POINTS), branch(POINTS * 2)]), POINT_IDS)["TripletLoss"]
    doubled = TripletLoss(margin=0.3)(branch(POINTS * 2), POINT_IDS)
    assert two.item() == pytest.approx(one.item() + doubled.item(), rel=1e-6)


def test_criterion_config_errors():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.NAME = ()
    with pytest.raises(ConfigError, match="empty"):
        build_criterion(cfg)
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "FocalLoss")
    with pytest.raises(KeyError, match=r"FocalLoss.*valid names:.*CircleLoss.*CrossEntropyLoss.*TripletLoss"):
        build_criterion(cfg)


def test_registered_loss_names_are_fastreids():
    assert {"CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface"} <= set(LOSSES.names())


# -- classifiers ------------------------------------------------------------------------------------------------

COS = torch.tensor([[0.8, 0.3, -0.5], [0.1, 0.9, 0.2]])
COS_TARGETS = torch.tensor([0, 1])


def test_linear_only_scales():
    out = LinearLogits(scale=3.0)(COS, COS_TARGETS)
    assert torch.allclose(out, COS * 3.0)
    assert LinearLogits.normalized is False


def test_cos_softmax_subtracts_margin_from_target_then_scales():
    out = CosSoftmax(scale=10.0, margin=0.25)(COS, COS_TARGETS)
    expected = torch.tensor([[10 * (0.8 - 0.25), 10 * 0.3, 10 * -0.5], [10 * 0.1, 10 * (0.9 - 0.25), 10 * 0.2]])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(CosSoftmax(10.0, 0.25)(COS, None), COS * 10)  # no targets: no margin


def test_circle_softmax_formula():
    # target: s * max(0, 1 + m - c) * (c - (1 - m));  others: s * max(0, c + m) * (c - m);  m=0.25, s=64
    out = CircleSoftmax(scale=64, margin=0.25)(COS, COS_TARGETS)
    expected = torch.tensor([
        [64 * 0.45 * 0.05, 64 * 0.55 * 0.05, 0.0],  # -0.5 + 0.25 < 0: weight clamped to 0
        [64 * 0.35 * (0.1 - 0.25), 64 * 0.35 * (0.9 - 0.75), 64 * 0.45 * (0.2 - 0.25)],
    ])
    assert torch.allclose(out, expected, atol=1e-5)


def test_arc_softmax_adds_angular_margin_with_fallback():
    m, s = 0.5, 2.0
    cos = torch.tensor([[0.6, 0.1], [-0.95, 0.3]])
    out = ArcSoftmax(scale=s, margin=m)(cos, torch.tensor([0, 0]))
    # cos(theta + m) = cos theta cos m - sin theta sin m, with sin theta = 0.8 for cos theta = 0.6
    with_margin = 0.6 * math.cos(m) - 0.8 * math.sin(m)
    # -0.95 is below cos(pi - m) = -0.8776: past that angle the margin becomes a linear penalty
    fallback = -0.95 - math.sin(math.pi - m) * m
    expected = torch.tensor([[s * with_margin, s * 0.1], [s * fallback, s * 0.3]])
    assert torch.allclose(out, expected, atol=1e-5)


def test_build_classifier_by_name():
    assert type(build_classifier("CircleSoftmax", 64, 0.35)) is CircleSoftmax
    with pytest.raises(ConfigError, match="CLS_LAYER 'circle'"):
        build_classifier("circle", 1, 0)


def test_head_feeds_cosines_to_the_margin_layer():
    head = EmbeddingHead(feat_dim=2, num_classes=2, with_bnneck=False, pool_layer="Identity", cls_layer="CosSoftmax",
                         scale=10.0, margin=0.2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))  # the head normalises its weight rows
    features = torch.tensor([[3.0, 4.0]]).view(1, 2, 1, 1)  # normalised: (0.6, 0.8)
    out = head.forward_train(features, torch.tensor([0]))
    assert torch.allclose(out.logits, torch.tensor([[10 * (0.6 - 0.2), 10 * 0.8]]), atol=1e-5)
    assert torch.allclose(out.cls_logits, torch.tensor([[6.0, 8.0]]), atol=1e-5)  # no margin


def test_linear_head_uses_raw_dot_products():
    head = EmbeddingHead(feat_dim=2, num_classes=2, with_bnneck=False, pool_layer="Identity", scale=1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
    out = head.forward_train(torch.tensor([[3.0, 4.0]]).view(1, 2, 1, 1), torch.tensor([0]))
    assert torch.allclose(out.logits, torch.tensor([[6.0, 2.0]]))


# -- learning-rate schedule -------------------------------------------------------------------------------------


def solver_cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 3.5e-4
    cfg.SOLVER.WARMUP_FACTOR = 0.1
    cfg.SOLVER.WARMUP_ITERS = 2000
    cfg.SOLVER.WARMUP_METHOD = "linear"
    cfg.SOLVER.SCHED = "MultiStepLR"
    cfg.SOLVER.STEPS = [40, 90]
    cfg.SOLVER.GAMMA = 0.1
    cfg.SOLVER.MAX_EPOCH = 120
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def test_linear_warmup():
    cfg = solver_cfg()
    assert lr_factor(cfg, 0, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 1000, 100) == pytest.approx(0.1 + (1 - 0.1) * 0.5)  # half way: 0.55
    assert lr_factor(cfg, 1999, 100) == pytest.approx(0.1 + 0.9 * 1999 / 2000)
    assert lr_factor(cfg, 2000, 100) == 1.0


def test_constant_and_exp_warmup():
    assert lr_factor(solver_cfg(WARMUP_METHOD="constant"), 1000, 100) == pytest.approx(0.1)
    assert lr_factor(solver_cfg(WARMUP_METHOD="exp"), 1000, 100) == pytest.approx(0.1 ** 0.5)
    with pytest.raises(ConfigError, match="WARMUP_METHOD"):
        lr_factor(solver_cfg(WARMUP_METHOD="cubic"), 0, 100)


def test_multistep_decay_after_each_step_epoch():
    cfg = solver_cfg()
    iters = 100
    assert lr_factor(cfg, 40 * iters - 1, iters) == 1.0  # still epoch 39
    assert lr_factor(cfg, 40 * iters, iters) == pytest.approx(0.1)
    assert lr_factor(cfg, 89 * iters, iters) == pytest.approx(0.1)
    assert lr_factor(cfg, 90 * iters, iters) == pytest.approx(0.01)
    assert lr_factor(cfg, 119 * iters, iters) == pytest.approx(0.01)


def test_warmup_and_decay_multiply():
    cfg = solver_cfg(STEPS=[1])
    assert lr_factor(cfg, 1000, 100) == pytest.approx(0.55 * 0.1)  # epoch 10, still warming up


def test_cosine_reaches_eta_min_over_base_lr():
    cfg = solver_cfg(SCHED="CosineAnnealingLR", ETA_MIN_LR=1e-7, WARMUP_ITERS=0)
    iters = 50
    floor = 1e-7 / 3.5e-4
    assert lr_factor(cfg, 0, iters) == pytest.approx(1.0)
    assert lr_factor(cfg, 60 * iters, iters) == pytest.approx(floor + (1 - floor) * 0.5)
    assert lr_factor(cfg, 120 * iters, iters) == pytest.approx(floor, rel=1e-9)
    assert lr_factor(cfg, 500 * iters, iters) == pytest.approx(floor, rel=1e-9)  # clamped past the end


def test_cosine_with_delay_epochs():
    cfg = solver_cfg(SCHED="CosineAnnealingLR", ETA_MIN_LR=0.0, WARMUP_ITERS=0, DELAY_EPOCHS=20, MAX_EPOCH=120)
    assert lr_factor(cfg, 20 * 10, 10) == pytest.approx(1.0)  # flat during the delay
    assert lr_factor(cfg, 70 * 10, 10) == pytest.approx(0.5)  # half of the remaining 100 epochs
    assert lr_factor(cfg, 120 * 10, 10) == pytest.approx(0.0, abs=1e-12)


def test_unknown_scheduler_is_a_config_error():
    with pytest.raises(ConfigError, match="SCHED"):
        lr_factor(solver_cfg(SCHED="WarmupMultiStepLR"), 5000, 100)


# -- whole-output losses: HAA's ensemble gate ---------------------------------------------------------------------

from compressreid.modeling.losses import OUTPUT_SCOPE  # noqa: E402
from compressreid.modeling.losses.ensemble_losses import BLACK_LOGITS, EnsembleGateLoss  # noqa: E402

# Gate logits (not black, black) of four images: rows 0 and 2 are confident, rows 1 and 3 undecided.
GATE_LOGITS = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]])


def gate_output(logits=GATE_LOGITS):
    return ModelOutput(embedding=torch.zeros(len(logits), 2), branches=[branch(torch.zeros(len(logits), 2))],
                       aux={BLACK_LOGITS: logits})


def test_gate_loss_golden_value_ignores_unknown_flags():
    # row 0 black, p = 3/4 -> -log(3/4); row 2 not black, p = 3/4 -> -log(3/4); rows 1, 3 unknown (-1)
    flags = torch.tensor([1, -1, 0, -1])
    loss = EnsembleGateLoss(scale=0.5)(gate_output(), torch.zeros(4, dtype=torch.long), {"black_clothes": flags})
    assert loss.item() == pytest.approx(0.5 * -math.log(0.75), rel=1e-6)
    # the unknown rows' logits do not matter
    other = GATE_LOGITS.clone()
    other[[1, 3]] = torch.tensor([[9.0, -9.0], [-4.0, 7.0]])
    again = EnsembleGateLoss(scale=0.5)(gate_output(other), None, {"black_clothes": flags})
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


def test_gate_loss_all_unknown_is_zero_with_a_graph():
    logits = GATE_LOGITS.clone().requires_grad_(True)
    loss = EnsembleGateLoss()(gate_output(logits), None, {"black_clothes": torch.full((4,), -1)})
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_gate_loss_needs_gate_logits_and_flags():
    loss = EnsembleGateLoss()
    with pytest.raises(ConfigError, match="black_logits"):
        loss(ModelOutput(torch.zeros(4, 2)), None, {"black_clothes": torch.ones(4)})
    with pytest.raises(ConfigError, match="black_clothes"):
        loss(gate_output(), None, None)
    with pytest.raises(ConfigError, match="3 black-clothes flags for 4"):
        loss(gate_output(), None, {"black_clothes": torch.ones(3)})


def test_criterion_calls_output_scoped_losses_once_with_the_batch():
    assert EnsembleGateLoss.scope == OUTPUT_SCOPE
    two_branches = ModelOutput(torch.zeros(4, 2), [branch(POINTS), branch(POINTS)], {BLACK_LOGITS: GATE_LOGITS})
    criterion = ReIDCriterion([("tri", TripletLoss(margin=0.3)), ("gate", EnsembleGateLoss())])
    terms = criterion(two_branches, POINT_IDS, {"black_clothes": torch.tensor([1, -1, 0, -1])})
    assert terms["tri"].item() == pytest.approx(2 * (SQRT5 - 0.4) / 4, rel=1e-5)  # per-branch, summed
    assert terms["gate"].item() == pytest.approx(-math.log(0.75), rel=1e-6)  # once, not per branch


def test_gate_loss_weight_comes_from_config():
    cfg = get_cfg()
    cfg.MODEL.HAA.GATE_LOSS_SCALE = 0.25
    cfg.MODEL.LOSSES.NAME = ("EnsembleGateLoss",)
    assert build_criterion(cfg).losses[0].scale == 0.25
