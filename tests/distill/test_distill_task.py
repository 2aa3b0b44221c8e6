"""The distillation task: frozen teachers, taps, config-built teachers and criterion, a few real training steps."""

import copy
import itertools

import pytest
import torch

from compressreid.checkpoint import save_checkpoint
from compressreid.config import dump_config, get_cfg
from compressreid.distill import (DistillationCriterion, DistillationTask, FeatureTaps, ModelInfo, Teacher,
                                  TeacherEnsemble, build_distillation_criterion, build_distillation_task)
from compressreid.distill.registry import identity_set
from compressreid.engine.loop import HookBase, TrainLoop
from compressreid.errors import CheckpointError, ConfigError
from compressreid.modeling import build_model

H, W, CLASSES = 64, 32, 5


def model_cfg(width=0.125, size=(H, W), embedding_dim=0, datasets=("Synthetic",)):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.WIDTH = width
    cfg.MODEL.HEADS.EMBEDDING_DIM = embedding_dim
    cfg.INPUT.SIZE_TRAIN = list(size)
    cfg.INPUT.SIZE_TEST = list(size)
    cfg.DATASETS.NAMES = tuple(datasets)
    return cfg


def build(cfg, classes=CLASSES, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg, classes)


def batch(n=8, size=(H, W), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(n, 3, *size, generator=g) * 255.0, "targets": torch.arange(n) % CLASSES}


def calibrate_like_a_trained_teacher(model, cfg):
    """Give a random teacher what a trained one has: BN running statistics of real batches (so its eval
    embeddings are centred like a trained BNNeck's) and confident logits (a larger classifier)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for seed in (100, 101):
            model(batch(16, size=tuple(cfg.INPUT.SIZE_TRAIN), seed=seed)["images"])
        model.heads.weight.mul_(100.0)
    for bn in norms:
        bn.momentum = 0.1
    model.eval()


def write_teacher(tmp_path, name="teacher", classes=CLASSES, seed=1, **kwargs):
    """A teacher config file and checkpoint on disk, as a user would give them."""
    cfg = model_cfg(width=0.25, **kwargs)
    model = build(cfg, classes, seed)
    calibrate_like_a_trained_teacher(model, cfg)
    config_file = dump_config(cfg, str(tmp_path / f"{name}.yaml"))
    weights = save_checkpoint(str(tmp_path / f"{name}.pth"), model)
    return config_file, weights, model


def distill_cfg(teachers, losses=("LogitKD",), supervised=False, **overrides):
    cfg = model_cfg()
    cfg.DISTILL.TEACHERS.CONFIGS = [c for c, _ in teachers]
    cfg.DISTILL.TEACHERS.WEIGHTS = [w for _, w in teachers]
    cfg.DISTILL.LOSSES.NAME = tuple(losses)
    cfg.DISTILL.SUPERVISED = supervised
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


@pytest.fixture()
def teacher_files(tmp_path):
    config_file, weights, model = write_teacher(tmp_path)
    return config_file, weights, model


# -- teacher wrapper -----------------------------------------------------------------------------------------------


def test_teacher_is_frozen_and_stays_in_eval_mode(teacher_files):
    config_file, weights, _ = teacher_files
    cfg = distill_cfg([(config_file, weights)], losses=("LogitKD", "FeatureMapDistill"))
    student = build(model_cfg())
    task = build_distillation_task(cfg, student, CLASSES)
    teacher = task.teachers.teachers[0]
    for call in (lambda: task.train(), lambda: task.model.train(), lambda: task.teachers.train(True),
                 lambda: teacher.train()):
        call()
        assert not teacher.training and not any(m.training for m in teacher.model.modules())
    assert task.model.training and task.criterion.training
    assert all(not p.requires_grad for p in teacher.parameters())
    running_mean = teacher.model.backbone.bn1.running_mean.clone()
    losses = task.training_step(batch())
    torch.stack(list(losses.values())).sum().backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert torch.equal(teacher.model.backbone.bn1.running_mean, running_mean)  # eval BN: statistics untouched
    teacher.model.train()  # even the bare model switched behind the wrapper's back is put back into eval
    task.training_step(batch())
    assert not teacher.model.training


def test_teacher_is_not_in_the_student_state_dict_nor_its_parameters(teacher_files):
    config_file, weights, _ = teacher_files
    student = build(model_cfg())
    keys = set(student.state_dict())
    task = build_distillation_task(distill_cfg([(config_file, weights)], losses=("LogitKD", "EmbeddingRegression")),
                                   student, CLASSES)
    assert set(task.model.state_dict()) == keys
    teacher_ids = {id(p) for p in task.teachers.parameters()}
    assert not teacher_ids & {id(p) for p in task.trainable_parameters()}
    # the projection (student 64-d -> teacher 128-d) is trained, and saved apart from the student
    names = [n for n, _ in task.named_trainable_parameters()]
    assert "distill.losses.0.1.projection.weight" in names
    assert set(task.state_dict()["criterion"]) == {"losses.0.1.projection.weight"}


def test_teacher_outputs_are_plain_fp32_targets_with_bf16_and_channels_last(teacher_files):
    _, _, model = teacher_files
    info = ModelInfo.of(model, "teacher", CLASSES)
    plain = Teacher(model, info)
    plain.set_taps(["backbone.layer2"])
    fast = Teacher(copy.deepcopy(model), info, bf16=True, channels_last=True)
    fast.set_taps(["backbone.layer2"])
    images = batch(4)["images"]
    a, b = plain(images), fast(images)
    assert a.logits[0].shape == (4, CLASSES)  # Baseline's forward_train gives cls_logits in eval mode too
    for v in (a, b):
        assert v.embedding.dtype == torch.float32 and not v.embedding.requires_grad
        assert not v.embedding.is_inference()  # usable as a saved target inside autograd
        assert v.features["backbone.layer2"].dtype == torch.float32
    assert b.features["backbone.layer2"].is_contiguous(memory_format=torch.channels_last)
    cos = torch.nn.functional.cosine_similarity(a.embedding, b.embedding)
    assert cos.min() > 0.98  # bf16 changes values a little, not the embedding
    assert (a.logits[0] - b.logits[0]).abs().max() < 0.05 * a.logits[0].abs().max()


def test_teacher_gets_the_batch_resized_to_its_own_input_size(tmp_path):
    config_file, weights, _ = write_teacher(tmp_path, size=(128, 64))
    cfg = distill_cfg([(config_file, weights)], losses=("FeatureMapDistill",))
    cfg.DISTILL.LOSSES.FEATURE.STAGES = [1]
    task = build_distillation_task(cfg, build(model_cfg()), CLASSES)
    teacher = task.teachers.teachers[0]
    seen = []
    handle = teacher.model.preprocess.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    views = task.teachers(batch(2)["images"])
    handle.remove()
    assert teacher.input_size == (128, 64) and seen == [(128, 64)]
    assert views[0].features["backbone.layer2"].shape == (2, 32, 16, 8)  # stride 8 of 128x64, width 0.25
    losses = task.training_step(batch(4))  # the teacher's 16x8 map is resized onto the student's 8x4
    assert torch.isfinite(losses["distill/FeatureMapDistill"])


# -- taps ----------------------------------------------------------------------------------------------------------


def test_taps_capture_declared_shapes_and_are_removed_cleanly():
    student = build(model_cfg())
    paths = [f.module for f in student.feature_info]
    taps = FeatureTaps(student, paths)
    student(batch(3)["images"])
    captured = taps.collect()
    for info in student.feature_info:
        stride = info.stride
        assert captured[info.module].shape == (3, info.channels, H // stride, W // stride)
    assert [captured[p].shape[1] for p in paths] == [8, 16, 32, 64]
    with pytest.raises(RuntimeError, match="did not fire"):
        taps.collect()
    taps.remove()
    assert all(not m._forward_hooks for m in student.modules())
    taps.resolve(["backbone.layer3"])  # re-resolution (e.g. after pruning replaced modules)
    assert len(taps) == 1
    student(batch(2)["images"])
    assert list(taps.collect()) == ["backbone.layer3"]
    with pytest.raises(ConfigError, match="no module 'backbone.layer9'.*backbone.layer1"):
        taps.resolve(["backbone.layer9"])
    taps.remove()


def test_task_hooks_only_what_losses_need_and_close_removes_everything(teacher_files):
    config_file, weights, _ = teacher_files
    cfg = distill_cfg([(config_file, weights)], losses=("RKDDistance", "FeatureMapDistill"))
    cfg.DISTILL.LOSSES.FEATURE.STAGES = [2, -1]
    student = build(model_cfg())
    task = build_distillation_task(cfg, student, CLASSES)
    assert task.student_taps.paths == ["backbone.layer3", "backbone.layer4"]
    assert task.teachers.teachers[0].taps.paths == ["backbone.layer3", "backbone.layer4"]
    task.close()
    assert all(not m._forward_hooks for m in student.modules())
    assert all(not m._forward_hooks for m in task.teachers.modules())


# -- criterion and config ------------------------------------------------------------------------------------------


def test_logit_kd_with_a_teacher_of_another_identity_set_raises(tmp_path):
    other_data = write_teacher(tmp_path, "duke", datasets=("DukeMTMC",))[:2]
    with pytest.raises(ConfigError, match="trained on identities .*DukeMTMC"):
        build_distillation_task(distill_cfg([other_data]), build(model_cfg()), CLASSES)
    other_classes = write_teacher(tmp_path, "seven", classes=7)[:2]
    with pytest.raises(ConfigError, match=r"classifies 0 identities \(its checkpoint classifier 'heads.weight' is "
                                          r"not sized for 5 classes\)"):
        build_distillation_task(distill_cfg([other_classes]), build(model_cfg()), CLASSES)
    # relation and embedding losses do not care
    task = build_distillation_task(distill_cfg([other_data], losses=("RKDDistance", "EmbeddingRegression")),
                                   build(model_cfg()), CLASSES)
    assert set(task.training_step(batch())) == {"distill/RKDDistance", "distill/EmbeddingRegression"}


def test_supervised_losses_join_by_default_and_terms_are_named(teacher_files):
    config_file, weights, _ = teacher_files
    cfg = distill_cfg([(config_file, weights)], losses=("LogitKD", "PKT"), supervised=True)
    losses = build_distillation_task(cfg, build(model_cfg()), CLASSES).training_step(batch())
    assert set(losses) == {"CrossEntropyLoss", "TripletLoss", "distill/LogitKD", "distill/PKT"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())


def test_several_teachers_are_weighted_and_named(tmp_path):
    first = write_teacher(tmp_path, "a", seed=1)[:2]
    second = write_teacher(tmp_path, "b", seed=2)[:2]
    cfg = distill_cfg([first, second], losses=("LogitKD",))
    cfg.DISTILL.TEACHERS.SCALES = [1.0, 0.0]
    task = build_distillation_task(cfg, build(model_cfg()), CLASSES)
    losses = task.training_step(batch())
    assert set(losses) == {"distill/LogitKD/t0", "distill/LogitKD/t1"}
    assert losses["distill/LogitKD/t0"] > 0 and losses["distill/LogitKD/t1"] == 0
    cfg.DISTILL.TEACHERS.SCALES = []
    assert build_distillation_task(cfg, build(model_cfg()), CLASSES).teachers.weights == [0.5, 0.5]
    cfg.DISTILL.TEACHERS.WEIGHTS = [first[1]]
    with pytest.raises(ConfigError, match="WEIGHTS has 1 entries for 2 CONFIGS"):
        build_distillation_task(cfg, build(model_cfg()), CLASSES)


def test_teacher_weights_fall_back_to_its_config_and_must_exist(tmp_path):
    cfg_t = model_cfg(width=0.25)
    save_checkpoint(str(tmp_path / "t.pth"), build(cfg_t, seed=1))
    cfg_t.MODEL.WEIGHTS = str(tmp_path / "t.pth")
    config_file = dump_config(cfg_t, str(tmp_path / "t.yaml"))
    cfg = distill_cfg([(config_file, "")])
    cfg.DISTILL.TEACHERS.WEIGHTS = []
    assert len(build_distillation_task(cfg, build(model_cfg()), CLASSES).teachers) == 1
    cfg_t.MODEL.WEIGHTS = ""
    dump_config(cfg_t, config_file)
    with pytest.raises(ConfigError, match="no weights"):
        build_distillation_task(cfg, build(model_cfg()), CLASSES)
    cfg.DISTILL.TEACHERS.CONFIGS = []
    with pytest.raises(ConfigError, match="CONFIGS is empty"):
        build_distillation_task(cfg, build(model_cfg()), CLASSES)


def test_a_teacher_checkpoint_missing_backbone_weights_is_refused(tmp_path):
    cfg_t = model_cfg(width=0.25)
    state = build(cfg_t).state_dict()
    del state["backbone.layer1.0.conv1.weight"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    config_file = dump_config(cfg_t, str(tmp_path / "t.yaml"))
    with pytest.raises(CheckpointError, match="lacks 1 weight.*backbone.layer1.0.conv1.weight"):
        build_distillation_task(distill_cfg([(config_file, str(tmp_path / "broken.pth"))]), build(model_cfg()), CLASSES)


def test_gallery_compatible_mode_trains_into_the_teacher_space(teacher_files):
    config_file, weights, _ = teacher_files
    cfg = distill_cfg([(config_file, weights)], losses=("EmbeddingRegression",), **{"DISTILL.GALLERY_COMPATIBLE": True})
    with pytest.raises(ConfigError, match="EMBEDDING_DIM to 128"):
        build_distillation_task(cfg, build(model_cfg()), CLASSES)
    student = build(model_cfg(embedding_dim=128))
    task = build_distillation_task(cfg, student, CLASSES)
    loss = task.criterion.losses[0][0]
    assert isinstance(loss.projection, torch.nn.Identity) and not list(task.criterion.parameters())
    assert cfg.DISTILL.LOSSES.EMBED.PROJECTION == "auto"  # the user's config is left as written
    cfg.DISTILL.LOSSES.NAME = ("RKDDistance",)
    with pytest.raises(ConfigError, match="needs EmbeddingRegression"):
        build_distillation_task(cfg, student, CLASSES)
    cfg.DISTILL.LOSSES.NAME = ("EmbeddingRegression",)
    cfg.DISTILL.LOSSES.EMBED.PROJECTION = "linear"
    with pytest.raises(ConfigError, match="forbids"):
        build_distillation_task(cfg, student, CLASSES)


def test_loss_names_are_validated(teacher_files):
    config_file, weights, _ = teacher_files
    student = build(model_cfg())
    with pytest.raises(ConfigError, match="lists a loss twice"):
        build_distillation_task(distill_cfg([(config_file, weights)], losses=("PKT", "PKT")), student, CLASSES)
    with pytest.raises(ConfigError, match="is empty"):
        build_distillation_task(distill_cfg([(config_file, weights)], losses=()), student, CLASSES)
    with pytest.raises(KeyError, match="unknown distillation loss 'Attention'.*valid names: EmbeddingRegression"):
        build_distillation_task(distill_cfg([(config_file, weights)], losses=("Attention",)), student, CLASSES)


# -- training ------------------------------------------------------------------------------------------------------


class Record(HookBase):
    def __init__(self):
        self.history = []

    def after_step(self):
        self.history.append(dict(self.loop.last_losses))


def train(task, steps, lr=1e-3):
    optimizer = torch.optim.Adam(task.trainable_parameters(), lr=lr)
    record = Record()
    TrainLoop(task, optimizer, itertools.repeat(batch(8)), max_iter=steps, hooks=[record]).run()
    return record.history


@pytest.mark.parametrize("name", ["LogitKD", "EmbeddingRegression", "RKDDistance", "RKDAngle", "SimilarityPreserving",
                                  "PKT", "ListwiseRanking", "FeatureMapDistill"])
def test_a_few_steps_on_one_loss_reduce_it(teacher_files, name):
    config_file, weights, _ = teacher_files
    task = build_distillation_task(distill_cfg([(config_file, weights)], losses=(name,)), build(model_cfg()), CLASSES)
    history = train(task, 8)
    assert history[-1]["total"] < 0.9 * history[0]["total"]
    assert not task.teachers.teachers[0].training


def test_a_few_steps_of_a_loss_mix_with_supervision_reduce_the_total(teacher_files):
    config_file, weights, _ = teacher_files
    losses = ("LogitKD", "EmbeddingRegression", "RKDDistance", "FeatureMapDistill")
    cfg = distill_cfg([(config_file, weights)], losses=losses, supervised=True)
    cfg.DISTILL.LOSSES.FEATURE.STAGES = [-2, -1]
    task = build_distillation_task(cfg, build(model_cfg()), CLASSES)
    adapter = task.criterion.losses[0][3].adapters[0][0].weight.detach().clone()
    history = train(task, 10)
    distill = [sum(v for k, v in h.items() if k.startswith("distill/")) for h in history]
    assert distill[-1] < 0.9 * distill[0]
    assert history[-1]["total"] < history[0]["total"]
    assert not torch.equal(adapter, task.criterion.losses[0][3].adapters[0][0].weight)  # adapters train too


def test_adapter_state_round_trips(teacher_files):
    config_file, weights, _ = teacher_files
    cfg = distill_cfg([(config_file, weights)], losses=("FeatureMapDistill",))
    first = build_distillation_task(cfg, build(model_cfg()), CLASSES)
    student = build(model_cfg())
    torch.manual_seed(123)  # other adapter weights
    second = build_distillation_task(cfg, student, CLASSES)
    state = first.state_dict()
    assert not torch.equal(state["criterion"]["losses.0.0.adapters.0.0.weight"],
                           second.state_dict()["criterion"]["losses.0.0.adapters.0.0.weight"])
    second.load_state_dict(state)
    for key, value in state["criterion"].items():
        assert torch.equal(value, second.state_dict()["criterion"][key]), key


def test_criterion_can_be_built_from_infos_alone():
    student, teacher = build(model_cfg()), build(model_cfg(width=0.25), seed=1)
    cfg = model_cfg()
    cfg.DISTILL.LOSSES.NAME = ("RKDAngle", "SimilarityPreserving", "ListwiseRanking")
    s_info = ModelInfo.of(student, "student", CLASSES, identity_set(cfg))
    t_info = ModelInfo.of(teacher, "teacher 0", CLASSES, identity_set(cfg))
    criterion = build_distillation_criterion(cfg, s_info, [t_info], [1.0])
    assert isinstance(criterion, DistillationCriterion) and criterion.supervised is not None
    task = DistillationTask(student, TeacherEnsemble([Teacher(teacher, t_info)]), criterion)
    losses = task.training_step(batch())
    assert {"distill/RKDAngle", "distill/SimilarityPreserving", "distill/ListwiseRanking"} <= set(losses)


def test_distill_section_merges_from_a_yaml_file(tmp_path, teacher_files):
    from compressreid.config import load_config

    config_file, weights, _ = teacher_files
    (tmp_path / "kd.yaml").write_text(
        "DISTILL:\n"
        f"  TEACHERS:\n    CONFIGS: ['{config_file}']\n    WEIGHTS: ['{weights}']\n    SCALES: [2]\n"
        "  SUPERVISED: False\n"
        "  LOSSES:\n    NAME: ('LogitKD', 'SimilarityPreserving')\n    KD:\n      DIVERGENCE: js\n"
        "    SP:\n      STAGES: [1, 2]\n"
        "MODEL:\n  BACKBONE:\n    DEPTH: 18x\n    WIDTH: 0.125\n"
        "DATASETS:\n  NAMES: ('Synthetic',)\n"
        "INPUT:\n  SIZE_TRAIN: [64, 32]\n")
    cfg = load_config(str(tmp_path / "kd.yaml"), ["DISTILL.LOSSES.KD.TEMPERATURE", "2"])
    task = build_distillation_task(cfg, build(model_cfg()), CLASSES)
    kd, sp = task.criterion.losses[0]
    assert (kd.divergence, kd.temperature, task.teachers.weights) == ("js", 2.0, [2.0])
    assert sp.pairs == [("backbone.layer2", "backbone.layer2"), ("backbone.layer3", "backbone.layer3")]
    assert set(task.training_step(batch())) == {"distill/LogitKD", "distill/SimilarityPreserving"}
