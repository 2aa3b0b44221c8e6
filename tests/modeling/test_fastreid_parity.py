"""Parity with fast-reid's own code: a fast-reid model's checkpoint, loaded through compressreid's documented path
(``get_cfg().merge_from_file`` + ``build_model`` + ``load_checkpoint``), gives fast-reid's eval embeddings.

fast-reid 1.4.0 builds the reference model from the published recipe yaml (PRETRAIN off, small input), its
weights and BN statistics are randomised deterministically, and its own ``Checkpointer`` writes the v1.x file.
The older layouts are converted test-side with maps read from fast-reid's old source (``BNneckHead``:
``bnneck``/``classifier``, persistent ``pixel_mean``/``pixel_std``), never with compressreid's loader.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

try:
    import fastreid  # noqa: F401 - the reference implementation these tests compare against
except ImportError as exc:  # a failure, not a skip: the README's parity claim rests on these tests
    raise ImportError("fast-reid is not installed, so the parity tests cannot run: `make test` installs it "
                      "(pip install --no-deps fastreid==1.4.0)") from exc
from fastreid.config import get_cfg as fastreid_get_cfg  # noqa: E402
from fastreid.modeling import build_model as fastreid_build_model  # noqa: E402
from fastreid.solver import build_lr_scheduler, build_optimizer  # noqa: E402
from fastreid.utils.checkpoint import Checkpointer  # noqa: E402

from compressreid.checkpoint import load_checkpoint  # noqa: E402
from compressreid.config import get_cfg  # noqa: E402
from compressreid.modeling import META_ARCHITECTURES, build_model  # noqa: E402

# The README states a max abs difference of 0.0: the same operations in the same order on the same weights, so
# anything above zero is a difference in the computation, not float rounding.
TOLERANCE = 0.0
NUM_CLASSES = 7

# fast-reid v1.x configs/Base-bagtricks.yml, Base-SBS.yml and Base-MGN.yml as published, except PRETRAIN
# (compressreid never downloads; the weights come from the checkpoint).
PUBLISHED = {
    "Base-bagtricks.yml": """\
        MODEL:
          META_ARCHITECTURE: Baseline
          BACKBONE:
            NAME: build_resnet_backbone
            NORM: BN
            DEPTH: 50x
            LAST_STRIDE: 1
            FEAT_DIM: 2048
            WITH_IBN: False
            PRETRAIN: False
          HEADS:
            NAME: EmbeddingHead
            NORM: BN
            WITH_BNNECK: True
            POOL_LAYER: GlobalAvgPool
            NECK_FEAT: before
            CLS_LAYER: Linear
          LOSSES:
            NAME: ("CrossEntropyLoss", "TripletLoss",)
            CE:
              EPSILON: 0.1
              SCALE: 1.
            TRI:
              MARGIN: 0.3
              HARD_MINING: True
              NORM_FEAT: False
              SCALE: 1.
        INPUT:
          SIZE_TRAIN: [ 256, 128 ]
          SIZE_TEST: [ 256, 128 ]
          REA:
            ENABLED: True
            PROB: 0.5
          FLIP:
            ENABLED: True
          PADDING:
            ENABLED: True
        DATALOADER:
          SAMPLER_TRAIN: NaiveIdentitySampler
          NUM_INSTANCE: 4
          NUM_WORKERS: 8
        SOLVER:
          AMP:
            ENABLED: True
          OPT: Adam
          MAX_EPOCH: 120
          BASE_LR: 0.00035
          WEIGHT_DECAY: 0.0005
          IMS_PER_BATCH: 64
          SCHED: MultiStepLR
          STEPS: [ 40, 90 ]
          GAMMA: 0.1
          WARMUP_FACTOR: 0.1
          WARMUP_ITERS: 2000
          CHECKPOINT_PERIOD: 30
        TEST:
          EVAL_PERIOD: 30
          IMS_PER_BATCH: 128
        CUDNN_BENCHMARK: True
        """,
    "Base-SBS.yml": """\
        _BASE_: Base-bagtricks.yml
        MODEL:
          FREEZE_LAYERS: [ backbone ]
          BACKBONE:
            WITH_NL: True
          HEADS:
            NECK_FEAT: after
            POOL_LAYER: GeneralizedMeanPoolingP
            CLS_LAYER: CircleSoftmax
            SCALE: 64
            MARGIN: 0.35
          LOSSES:
            NAME: ("CrossEntropyLoss", "TripletLoss",)
            CE:
              EPSILON: 0.1
              SCALE: 1.0
            TRI:
              MARGIN: 0.0
              HARD_MINING: True
              NORM_FEAT: False
              SCALE: 1.0
        INPUT:
          SIZE_TRAIN: [ 384, 128 ]
          SIZE_TEST: [ 384, 128 ]
          AUTOAUG:
            ENABLED: True
            PROB: 0.1
        DATALOADER:
          NUM_INSTANCE: 16
        SOLVER:
          AMP:
            ENABLED: True
          OPT: Adam
          MAX_EPOCH: 60
          BASE_LR: 0.00035
          WEIGHT_DECAY: 0.0005
          IMS_PER_BATCH: 64
          SCHED: CosineAnnealingLR
          DELAY_EPOCHS: 30
          ETA_MIN_LR: 0.0000007
          WARMUP_FACTOR: 0.1
          WARMUP_ITERS: 2000
          FREEZE_ITERS: 1000
          CHECKPOINT_PERIOD: 20
        TEST:
          EVAL_PERIOD: 10
          IMS_PER_BATCH: 128
        CUDNN_BENCHMARK: True
        """,
    "Base-MGN.yml": """\
        _BASE_: Base-SBS.yml
        MODEL:
          META_ARCHITECTURE: MGN
          FREEZE_LAYERS: [ backbone, b1, b2, b3, ]
          BACKBONE:
            WITH_NL: False
          HEADS:
            EMBEDDING_DIM: 256
        """,
}
# What each dataset recipe adds on top (configs/Market1501/*_R50-ibn.yml); the dataset keys are irrelevant here.
RECIPES = {
    "bagtricks": ("Base-bagtricks.yml", "logs/market1501/bagtricks_R50-ibn"),
    "sbs": ("Base-SBS.yml", "logs/market1501/sbs_R50-ibn"),
    "mgn": ("Base-MGN.yml", "logs/market1501/mgn_R50-ibn"),
}
# Input size per recipe: MGN splits its map into 3 stripes, which needs a 128-pixel-high input.
INPUT_SIZE = {"bagtricks": (64, 32), "sbs": (64, 32), "mgn": (128, 64)}


def write_recipe(folder: Path, recipe: str) -> Path:
    """The published base files plus a dataset recipe (R50-ibn) in fast-reid's yaml format."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in PUBLISHED.items():
        (folder / name).write_text(textwrap.dedent(text))
    base, output_dir = RECIPES[recipe]
    path = folder / "Market1501" / f"{recipe}_R50-ibn.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(f"""\
        _BASE_: ../{base}
        MODEL:
          BACKBONE:
            WITH_IBN: True
        DATASETS:
          NAMES: ("Market1501",)
          TESTS: ("Market1501",)
        OUTPUT_DIR: {output_dir}
        """))
    return path


def randomise(model: nn.Module, images: torch.Tensor, seed: int) -> None:
    """Deterministic non-trivial weights: random affine norms, GeM p and zero-initialised non-local outputs,
    then BN running statistics set from one batch (momentum 1), so no layer is an identity or all zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("pool_layer.p"):
                param.fill_(2.0 + torch.rand(1, generator=generator).item())
            elif param.ndim == 1:  # norm affine (BN, IN)
                is_scale = name.endswith("weight")
                noise = torch.rand(param.shape, generator=generator)
                param.copy_(0.5 + noise if is_scale else 0.2 * (noise - 0.5))
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.train()
            module.momentum = 1.0
    with torch.no_grad():
        model(images.clone())  # fast-reid normalises its input in place
    model.eval()


def fastreid_model(recipe_yaml: Path, recipe: str, seed: int):
    cfg = fastreid_get_cfg()
    cfg.merge_from_file(str(recipe_yaml))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.HEADS.NUM_CLASSES = NUM_CLASSES  # fast-reid writes the derived class count into its config
    cfg.INPUT.SIZE_TEST = list(INPUT_SIZE[recipe])
    torch.manual_seed(seed)
    model = fastreid_build_model(cfg)
    return cfg, model


def images_for(recipe: str, seed: int, count: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, *INPUT_SIZE[recipe], generator=generator) * 255.0


def save_v1(cfg, model: nn.Module, folder: Path) -> Path:
    """The file fast-reid v1.x's trainer writes: Checkpointer with the optimizer and both schedulers, plus epoch."""
    optimizer, _ = build_optimizer(cfg, model, contiguous=False)
    schedulers = build_lr_scheduler(cfg, optimizer, iters_per_epoch=100)
    Checkpointer(model, str(folder), optimizer=optimizer, **schedulers).save("model_final", epoch=59)
    return folder / "model_final.pth"


HEAD_NAMES = ("heads", "b1_head", "b2_head", "b3_head", "b21_head", "b22_head", "b31_head", "b32_head", "b33_head")


def to_v1_0(state):
    """fast-reid v1.0 names (its EmbeddingHead held a ``classifier`` module; pixel buffers were persistent)."""
    renames = {f"{head}.weight": f"{head}.classifier.weight" for head in HEAD_NAMES}
    return {renames.get(key, key): value for key, value in state.items()}


def to_modelzoo(state):
    """fast-reid model-zoo generation names: ``BNneckHead`` (bnneck, classifier) as in fastreid/modeling/heads/
    bnneck_head.py of that time. Only meaningful for heads without a reduction (Baseline recipes)."""
    out = {}
    for key, value in to_v1_0(state).items():
        out[key.replace("heads.bottleneck.0.", "heads.bnneck.")] = value
    return out


def write_layout(cfg, model, folder: Path, layout: str, pixel_mean, pixel_std) -> Path:
    if layout == "v1":
        return save_v1(cfg, model, folder)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state = to_v1_0(state) if layout == "v1.0" else to_modelzoo(state)
    state["pixel_mean"] = torch.tensor(pixel_mean).view(1, -1, 1, 1)
    state["pixel_std"] = torch.tensor(pixel_std).view(1, -1, 1, 1)
    path = folder / f"{layout}.pth"
    torch.save({"model": state, "iteration": 17999}, path)  # that generation trained by iterations
    return path


def check_parity(tmp_path: Path, recipe: str, layout: str, config_source: str, seed: int = 0) -> float:
    recipe_yaml = write_recipe(tmp_path / "configs", recipe)
    fr_cfg, fr_model = fastreid_model(recipe_yaml, recipe, seed)
    images = images_for(recipe, seed + 1)
    randomise(fr_model, images_for(recipe, seed + 2, count=8), seed)
    with torch.no_grad():
        reference = fr_model(images.clone())
    ckpt_dir = tmp_path / "run"
    ckpt_dir.mkdir()
    dump = ckpt_dir / "config.yaml"  # fast-reid's OUTPUT_DIR dump of the same run
    dump.write_text(fr_cfg.dump())
    path = write_layout(fr_cfg, fr_model, ckpt_dir, layout, fr_cfg.MODEL.PIXEL_MEAN, fr_cfg.MODEL.PIXEL_STD)

    cfg = get_cfg()
    cfg.merge_from_file(str(dump if config_source == "dump" else recipe_yaml))
    model = build_model(cfg)
    report = load_checkpoint(model, str(path))
    assert report.missing == [] and report.unexpected == []
    model.eval()
    with torch.no_grad():
        embedding = model(images)
    assert embedding.shape == reference.shape
    assert reference.abs().max() > 0.1 and reference.std() > 0.1  # not a trivially passing all-zero output
    return (embedding - reference).abs().max().item()


@pytest.mark.parametrize("recipe, layout, config_source", [
    ("bagtricks", "v1", "yaml"),
    ("bagtricks", "modelzoo", "dump"),
    ("sbs", "v1", "dump"),
    ("sbs", "v1.0", "yaml"),
    ("sbs", "modelzoo", "yaml"),
])
def test_baseline_embeddings_match_fastreid(tmp_path, recipe, layout, config_source):
    diff = check_parity(tmp_path, recipe, layout, config_source)
    print(f"{recipe} {layout} via {config_source}: max abs diff {diff:.3g}")
    assert diff <= TOLERANCE


def test_modelzoo_pixel_statistics_stored_in_the_file_are_used(tmp_path):
    """That generation normalised with the buffers saved in the checkpoint, whatever the yaml said."""
    recipe_yaml = write_recipe(tmp_path / "configs", "bagtricks")
    fr_cfg, fr_model = fastreid_model(recipe_yaml, "bagtricks", seed=3)
    mean, std = [110.0, 100.0, 90.0], [50.0, 52.0, 54.0]
    fr_model.pixel_mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
    fr_model.pixel_std.copy_(torch.tensor(std).view(1, -1, 1, 1))
    randomise(fr_model, images_for("bagtricks", 4, count=8), seed=3)
    images = images_for("bagtricks", 5)
    with torch.no_grad():
        reference = fr_model(images.clone())
    path = write_layout(fr_cfg, fr_model, tmp_path, "modelzoo", mean, std)
    cfg = get_cfg()
    cfg.merge_from_file(str(recipe_yaml))  # default PIXEL_MEAN/STD, unlike the file
    model = build_model(cfg).eval()
    load_checkpoint(model, str(path))
    with torch.no_grad():
        assert (model(images) - reference).abs().max().item() <= TOLERANCE


def test_mgn_embeddings_match_fastreid(tmp_path):
    if "MGN" not in META_ARCHITECTURES:
        pytest.skip("compressreid's MGN (teachers/mgn.py) is not registered yet")
    diff = check_parity(tmp_path, "mgn", "v1", "yaml")
    print(f"mgn v1 via yaml: max abs diff {diff:.3g}")
    assert diff <= TOLERANCE


# fast-reid's model-zoo generation Base-MGN.yml (configs/Base-MGN.yml of mid-2020) as published, except PRETRAIN,
# plus that generation's R50-ibn recipe. Its values (DEPTH 50, BNneckHead, gempool, circle, IN_FEAT) are the
# names fast-reid v1.x later renamed.
MODELZOO_BASE_MGN = """\
    MODEL:
      META_ARCHITECTURE: 'MGN'
      OPEN_LAYERS: ["b1_pool", "b1_head", "b2_pool", "b2_head", "b21_pool", "b21_head", "b22_pool", "b22_head",
                    "b3_pool", "b3_head", "b31_pool", "b31_head", "b32_pool", "b32_head", "b33_pool", "b33_head"]
      BACKBONE:
        NAME: "build_resnet_backbone"
        NORM: "BN"
        DEPTH: 50
        LAST_STRIDE: 1
        WITH_IBN: False
        WITH_NL: False
        PRETRAIN: False
      HEADS:
        NAME: "BNneckHead"
        NORM: "BN"
        NECK_FEAT: "after"
        CLS_LAYER: "circle"
        POOL_LAYER: "gempool"
        IN_FEAT: 256
        SCALE: 64
        MARGIN: 0.35
      LOSSES:
        NAME: ("CrossEntropyLoss", "TripletLoss",)
        CE:
          EPSILON: 0.1
          SCALE: 0.125
        TRI:
          MARGIN: 0.0
          HARD_MINING: True
          NORM_FEAT: False
          SCALE: 0.20
    DATASETS:
      NAMES: ("DukeMTMC",)
      TESTS: ("DukeMTMC",)
    INPUT:
      SIZE_TRAIN: [384, 128]
      SIZE_TEST: [384, 128]
      DO_AUTOAUG: True
      REA:
        ENABLED: True
        PROB: 0.5
        MEAN: [123.675, 116.28, 103.53]
      DO_PAD: True
    DATALOADER:
      PK_SAMPLER: True
      NUM_INSTANCE: 16
      NUM_WORKERS: 16
    SOLVER:
      OPT: "Adam"
      MAX_ITER: 18000
      BASE_LR: 0.00035
      BIAS_LR_FACTOR: 2.
      WEIGHT_DECAY: 0.0005
      WEIGHT_DECAY_BIAS: 0.0
      IMS_PER_BATCH: 64
      DELAY_ITERS: 9000
      ETA_MIN_LR: 0.00000077
      WARMUP_FACTOR: 0.01
      WARMUP_ITERS: 2000
      FREEZE_ITERS: 2000
      LOG_PERIOD: 200
      CHECKPOINT_PERIOD: 6000
    TEST:
      EVAL_PERIOD: 2000
      IMS_PER_BATCH: 256
      PRECISE_BN:
        ENABLED: False
        DATASET: 'DukeMTMC'
    CUDNN_BENCHMARK: True
    """
MODELZOO_MGN_RECIPE = """\
    _BASE_: "../Base-MGN.yml"
    MODEL:
      BACKBONE:
        WITH_IBN: True
      HEADS:
        NUM_CLASSES: 702
    DATASETS:
      NAMES: ("DukeMTMC",)
      TESTS: ("DukeMTMC",)
    OUTPUT_DIR: "logs/dukemtmc/mgn_R50-ibn"
    """


class ModelZooBNneckHead(nn.Module):
    """That generation's BNneckHead as MGN built it (pool layer Identity): ``bnneck`` (frozen-bias BN) and
    ``classifier``; eval returns ``bnneck(x)[..., 0, 0]`` (fastreid/modeling/heads/bnneck_head.py, mid-2020)."""

    def __init__(self, in_feat: int, num_classes: int):
        super().__init__()
        self.bnneck = nn.BatchNorm2d(in_feat)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_feat, num_classes, bias=False)

    def forward(self, features):
        return self.bnneck(features)[..., 0, 0]


class ModelZooMGN(nn.Module):
    """fast-reid's model-zoo generation MGN, eval path, with its module names, from its meta_arch/mgn.py of
    mid-2020 (persistent ``pixel_mean``/``pixel_std``; ``b*_pool`` = one shared pool layer -> 1x1 conv -> BN ->
    ReLU; ``b*_head`` = BNneckHead; output order b1, b2, b3, b21, b22, b31, b32, b33). Built from fast-reid
    1.4.0's ResNet, whose module names and Bottleneck are the same as that generation's."""

    BRANCHES = ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")

    def __init__(self, fr_cfg, in_feat: int, num_classes: int):
        super().__init__()
        import copy

        from fastreid.layers import get_norm
        from fastreid.layers.pooling import GeneralizedMeanPoolingP
        from fastreid.modeling.backbones import build_backbone
        from fastreid.modeling.backbones.resnet import Bottleneck

        self.register_buffer("pixel_mean", torch.tensor(fr_cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(fr_cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1))
        resnet = build_backbone(fr_cfg)
        self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1,
                                      resnet.layer2, resnet.layer3[0])
        res_conv4 = nn.Sequential(*resnet.layer3[1:])
        bn_norm = fr_cfg.MODEL.BACKBONE.NORM
        res_p_conv5 = nn.Sequential(
            Bottleneck(1024, 512, bn_norm, False, False, downsample=nn.Sequential(
                nn.Conv2d(1024, 2048, 1, bias=False), get_norm(bn_norm, 2048))),
            Bottleneck(2048, 512, bn_norm, False, False),
            Bottleneck(2048, 512, bn_norm, False, False))
        res_p_conv5.load_state_dict(resnet.layer4.state_dict())
        self.b1 = nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(resnet.layer4))
        self.b2 = nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(res_p_conv5))
        self.b3 = nn.Sequential(copy.deepcopy(res_conv4), copy.deepcopy(res_p_conv5))
        pool_layer = GeneralizedMeanPoolingP()  # "gempool"; one instance in every branch, as that code did
        for branch in self.BRANCHES:
            self.add_module(f"{branch}_pool", nn.Sequential(pool_layer, nn.Conv2d(2048, in_feat, 1, bias=False),
                                                            nn.BatchNorm2d(in_feat), nn.ReLU(True)))
            self.add_module(f"{branch}_head", ModelZooBNneckHead(in_feat, num_classes))

    def forward(self, images):
        features = self.backbone((images - self.pixel_mean) / self.pixel_std)
        g1, g2, g3 = self.b1(features), self.b2(features), self.b3(features)
        maps = [g1, g2, g3, *torch.chunk(g2, 2, dim=2), *torch.chunk(g3, 3, dim=2)]
        return torch.cat([getattr(self, f"{branch}_head")(getattr(self, f"{branch}_pool")(x))
                          for branch, x in zip(self.BRANCHES, maps)], dim=1)


def write_modelzoo_mgn_recipe(folder: Path) -> Path:
    (folder / "DukeMTMC").mkdir(parents=True, exist_ok=True)
    (folder / "Base-MGN.yml").write_text(textwrap.dedent(MODELZOO_BASE_MGN))
    path = folder / "DukeMTMC" / "mgn_R50-ibn.yml"
    path.write_text(textwrap.dedent(MODELZOO_MGN_RECIPE))
    return path


def modelzoo_mgn_reference(seed: int = 0):
    """The reference model (fast-reid 1.4.0's R50-ibn, built the model-zoo MGN way), randomised."""
    fr_cfg = fastreid_get_cfg()
    fr_cfg.MODEL.BACKBONE.DEPTH, fr_cfg.MODEL.BACKBONE.WITH_IBN = "50x", True
    fr_cfg.MODEL.BACKBONE.PRETRAIN, fr_cfg.MODEL.BACKBONE.LAST_STRIDE = False, 1
    torch.manual_seed(seed)
    model = ModelZooMGN(fr_cfg, in_feat=256, num_classes=702)
    with torch.no_grad():
        model.b1_pool[0].p.fill_(2.4)  # off GeM's initial 3, so that p must transfer (one module, all 8 pools)
    randomise(model, images_for("mgn", seed + 2, count=8), seed)
    return model


def test_modelzoo_mgn_embeddings_match_that_generations_model(tmp_path):
    """A model-zoo MGN file with its own (model-zoo generation) yaml, both unchanged: same embeddings."""
    reference = modelzoo_mgn_reference()
    state = reference.state_dict()
    assert "b1_pool.0.p" in state and "b1_pool.1.weight" in state and "b33_head.bnneck.running_var" in state
    path = tmp_path / "duke_mgn_R50-ibn.pth"
    torch.save({"model": state, "iteration": 17999}, path)
    images = images_for("mgn", 1)
    with torch.no_grad():
        expected = reference(images)

    cfg = get_cfg()
    cfg.merge_from_file(str(write_modelzoo_mgn_recipe(tmp_path / "configs")))
    assert (cfg.MODEL.HEADS.EMBEDDING_DIM, cfg.MODEL.HEADS.REDUCTION_BN_RELU) == (256, True)
    model = build_model(cfg)
    report = load_checkpoint(model, str(path), strict=True)
    assert report.format == "fastreid-modelzoo-mgn" and report.skipped == []
    model.eval()
    with torch.no_grad():
        embedding = model(images)
    assert embedding.shape == expected.shape == (4, 8 * 256)
    assert expected.abs().max() > 0.1 and expected.std() > 0.1
    diff = (embedding - expected).abs().max().item()
    print(f"model-zoo mgn: max abs diff {diff:.3g}")
    assert diff <= TOLERANCE
