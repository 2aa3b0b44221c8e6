"""Default configuration: every key compressreid reads, declared and commented here.

Key names follow fast-reid wherever the concept is the same, so a fast-reid yaml merges as-is.
"""

from compressreid.config.node import CfgNode as CN

_C = CN()

_C.MODEL = CN()
# "cpu", "cuda" or "auto" (cuda when available). fast-reid's default is "cuda"; ours must run on CPU.
_C.MODEL.DEVICE = "auto"
# Meta-architecture registered in compressreid.modeling.META_ARCHITECTURES (Baseline, MGN, HAA).
_C.MODEL.META_ARCHITECTURE = "Baseline"
# Module-name prefixes frozen for the first SOLVER.FREEZE_ITERS iterations (fast-reid semantics).
_C.MODEL.FREEZE_LAYERS = []
# Path of a checkpoint to load before training/evaluation (compressreid or fast-reid format).
_C.MODEL.WEIGHTS = ""
# Checkpoints a run loads (MODEL.WEIGHTS to evaluate, PRUNE.SOURCE / QUANT.SOURCE, distillation teachers) must
# fit the model: a missing or unexpected key is an error (a classifier sized for another dataset is still
# skipped). False loads what fits and only warns about the rest (partial loads, e.g. a bare backbone).
_C.MODEL.LOAD_STRICT = True
# Per-channel RGB mean/std on the 0-255 scale. Normalisation happens inside the model so that
# exported graphs take raw RGB 0-255 and are self-contained.
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

_C.MODEL.BACKBONE = CN()
# Backbone builder registered in compressreid.modeling.BACKBONES. fast-reid's builder names are
# accepted as names ("build_resnet_backbone").
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# ResNet depth as fast-reid writes it: "18x", "34x", "50x", "101x".
_C.MODEL.BACKBONE.DEPTH = "50x"
# Stride of the first block of the last stage (1 keeps a 2x larger final feature map, as ReID does).
_C.MODEL.BACKBONE.LAST_STRIDE = 1
# Channels of the backbone's final feature map (2048 for ResNet-50/101, 512 for ResNet-18/34).
_C.MODEL.BACKBONE.FEAT_DIM = 2048
# Normalisation layer type: "BN" (BatchNorm2d) or "syncBN" (SyncBatchNorm under DDP).
_C.MODEL.BACKBONE.NORM = "BN"
# IBN-a: InstanceNorm on half the channels of the first norm of every block in stages 1-3.
_C.MODEL.BACKBONE.WITH_IBN = False
# Non-local blocks (2 in stage 2, 3 in stage 3, as fast-reid places them).
_C.MODEL.BACKBONE.WITH_NL = False
# fast-reid downloads ImageNet weights when PRETRAIN is True; compressreid never downloads, it only
# reads PRETRAIN_PATH, so training with PRETRAIN=True and an empty or missing path is a configuration
# error. Building a model to load a finished checkpoint never reads the file.
_C.MODEL.BACKBONE.PRETRAIN = False
# Local file with torchvision, timm or IBN-Net backbone weights.
_C.MODEL.BACKBONE.PRETRAIN_PATH = ""
# Model name passed to timm.create_model when NAME is "timm" (pretrained weights never downloaded).
_C.MODEL.BACKBONE.TIMM_NAME = ""
# Width multiplier: ResNet base channels are 64 * WIDTH (1.0 = the standard ResNet that fast-reid
# checkpoints use; the CPU-sized synthetic teachers use less); OSNet x1.0/0.75/0.5/0.25, MobileNetV3.
_C.MODEL.BACKBONE.WIDTH = 1.0
# Start every ResNet residual block as the identity (its last BN's scale at 0). An initialisation only (checkpoints
# and pretrained weights overwrite it); it helps deep bottleneck ResNets trained from scratch.
_C.MODEL.BACKBONE.ZERO_INIT_RESIDUAL = False

_C.MODEL.HEADS = CN()
# Head registered in compressreid.modeling.HEADS.
_C.MODEL.HEADS.NAME = "EmbeddingHead"
# Norm of the BNNeck and reduction layers ("BN" or "syncBN").
_C.MODEL.HEADS.NORM = "BN"
# Number of training identities. 0 = derived from the training data at run time; the derived
# value lives in the run context and is never written back into the config.
_C.MODEL.HEADS.NUM_CLASSES = 0
# Output dimension of an optional 1x1 reduction before the BNNeck; 0 = no reduction.
_C.MODEL.HEADS.EMBEDDING_DIM = 0
# BN + ReLU after that reduction, before the BNNeck: the branch heads of fast-reid's model-zoo generation MGN.
# A config of that generation for MGN sets it (with EMBEDDING_DIM = its IN_FEAT) by itself; see
# compressreid.config.fastreid_legacy.
_C.MODEL.HEADS.REDUCTION_BN_RELU = False
# BatchNorm bottleneck after pooling; the eval embedding is taken after it (fast-reid "after").
_C.MODEL.HEADS.WITH_BNNECK = True
# GlobalAvgPool, GlobalMaxPool, GeneralizedMeanPooling (fixed p=3), GeneralizedMeanPoolingP (learned p).
_C.MODEL.HEADS.POOL_LAYER = "GlobalAvgPool"
# Feature given to metric losses (triplet, circle): "before" or "after" the BNNeck. The eval
# embedding is always taken after the BNNeck, as fast-reid v1 does.
_C.MODEL.HEADS.NECK_FEAT = "after"
# Classifier: Linear, CircleSoftmax, ArcSoftmax or CosSoftmax.
_C.MODEL.HEADS.CLS_LAYER = "Linear"
# Margin and scale of margin-based classifiers (ignored by Linear).
_C.MODEL.HEADS.MARGIN = 0.0
_C.MODEL.HEADS.SCALE = 1.0

_C.MODEL.HAA = CN()
# HAA's head-shoulder box (x0, y0, x1, y1) as fractions of the image, cropped and resampled to the input size.
# The paper localises it with an STN trained on box annotations; without annotations we use this fixed prior.
_C.MODEL.HAA.HS_BOX = [0.0, 0.0, 1.0, 0.4]
# Horizontal stripes of the head-shoulder map, each with its own attention and embedding head (the paper: 3).
_C.MODEL.HAA.NUM_STRIPES = 3
# Per-stripe embedding dimension after a 1x1 reduction (the paper: 512); 0 keeps the trunk's channels.
_C.MODEL.HAA.STRIPE_DIM = 512
# Bottleneck ratio of the stripes' channel attention (the paper's code: 2048 -> 1024, i.e. 2).
_C.MODEL.HAA.ATTENTION_REDUCTION = 2
# Weight of EnsembleGateLoss: black-clothes cross-entropy on the adaptive ensemble's gate (name it in
# MODEL.LOSSES.NAME); images whose dataset has no black-clothes flag are ignored.
_C.MODEL.HAA.GATE_LOSS_SCALE = 1.0

_C.MODEL.LOSSES = CN()
# Supervised ReID losses, registered in compressreid.modeling.LOSSES; each has its own weight (SCALE).
_C.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")
_C.MODEL.LOSSES.CE = CN()
# Label-smoothing epsilon of the cross-entropy loss.
_C.MODEL.LOSSES.CE.EPSILON = 0.1
# Unused by compressreid (fast-reid's adaptive smoothing); kept so fast-reid files merge.
_C.MODEL.LOSSES.CE.ALPHA = 0.2
# Weight of the cross-entropy loss in the total.
_C.MODEL.LOSSES.CE.SCALE = 1.0
_C.MODEL.LOSSES.TRI = CN()
# Triplet margin; 0 selects the soft-margin variant.
_C.MODEL.LOSSES.TRI.MARGIN = 0.3
# L2-normalise features before triplet distances.
_C.MODEL.LOSSES.TRI.NORM_FEAT = False
# Batch-hard mining (hardest positive/negative per anchor); False = weighted soft mining.
_C.MODEL.LOSSES.TRI.HARD_MINING = True
# Weight of the triplet loss.
_C.MODEL.LOSSES.TRI.SCALE = 1.0
_C.MODEL.LOSSES.CIRCLE = CN()
# Circle loss (pairwise form) relaxation margin, scale gamma and weight.
_C.MODEL.LOSSES.CIRCLE.MARGIN = 0.25
_C.MODEL.LOSSES.CIRCLE.GAMMA = 128
_C.MODEL.LOSSES.CIRCLE.SCALE = 1.0
_C.MODEL.LOSSES.COSFACE = CN()
# CosFace (pairwise form) margin, scale gamma and weight.
_C.MODEL.LOSSES.COSFACE.MARGIN = 0.25
_C.MODEL.LOSSES.COSFACE.GAMMA = 128
_C.MODEL.LOSSES.COSFACE.SCALE = 1.0

_C.INPUT = CN()
# (height, width) of training and test images.
_C.INPUT.SIZE_TRAIN = [256, 128]
_C.INPUT.SIZE_TEST = [256, 128]
_C.INPUT.FLIP = CN()
# Random horizontal flip during training.
_C.INPUT.FLIP.ENABLED = True
_C.INPUT.FLIP.PROB = 0.5
_C.INPUT.PADDING = CN()
# Pad then random-crop back to SIZE_TRAIN (translation augmentation).
_C.INPUT.PADDING.ENABLED = True
# Padding mode of torchvision's Pad: constant, edge, reflect or symmetric.
_C.INPUT.PADDING.MODE = "constant"
_C.INPUT.PADDING.SIZE = 10
_C.INPUT.CJ = CN()
# Colour jitter (applied with probability PROB).
_C.INPUT.CJ.ENABLED = False
_C.INPUT.CJ.PROB = 0.5
_C.INPUT.CJ.BRIGHTNESS = 0.15
_C.INPUT.CJ.CONTRAST = 0.15
_C.INPUT.CJ.SATURATION = 0.1
_C.INPUT.CJ.HUE = 0.1
_C.INPUT.REA = CN()
# Random erasing; VALUE is the fill on the 0-255 RGB scale (fast-reid fills with the pixel mean).
_C.INPUT.REA.ENABLED = True
_C.INPUT.REA.PROB = 0.5
_C.INPUT.REA.VALUE = [123.675, 116.28, 103.53]
_C.INPUT.AUTOAUG = CN()
# torchvision AutoAugment (ImageNet policy), applied with probability PROB.
_C.INPUT.AUTOAUG.ENABLED = False
_C.INPUT.AUTOAUG.PROB = 0.0
_C.INPUT.AUGMIX = CN()
# torchvision AugMix, applied with probability PROB.
_C.INPUT.AUGMIX.ENABLED = False
_C.INPUT.AUGMIX.PROB = 0.0

_C.DATASETS = CN()
# Training sets (several are merged with identities namespaced per dataset).
_C.DATASETS.NAMES = ("Market1501",)
# Test sets, each evaluated and reported separately.
_C.DATASETS.TESTS = ("Market1501",)
# Folder that contains each dataset's own folder. Never read from an environment variable.
_C.DATASETS.ROOT = "datasets"
# Also train on query+gallery (fast-reid's COMBINEALL); evaluation then measures training data.
_C.DATASETS.COMBINEALL = False
# What an unreadable or corrupt image does: "fail" (stop, naming the file) or "skip" (skip and count).
_C.DATASETS.ON_CORRUPT_IMAGE = "fail"
_C.DATASETS.SYNTHETIC = CN()
# The built-in synthetic benchmark (dataset name "Synthetic"), rendered once under ROOT.
# 500 training identities: with fewer, models trained from scratch memorise the identities instead of
# learning what separates people, and extra capacity does not show in the test mAP.
_C.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = 500
_C.DATASETS.SYNTHETIC.NUM_TEST_IDS = 100
_C.DATASETS.SYNTHETIC.NUM_CAMERAS = 6
_C.DATASETS.SYNTHETIC.MIN_CAMERAS_PER_ID = 4
# Inclusive range of images per (identity, camera).
_C.DATASETS.SYNTHETIC.IMAGES_PER_CAMERA = [2, 4]
# Share of identities in near-black clothes (the HAA problem); flagged per identity.
_C.DATASETS.SYNTHETIC.BLACK_CLOTHES_SHARE = 0.2
# Gallery images of identities never queried (pid 0, as Market1501's distractors).
_C.DATASETS.SYNTHETIC.NUM_DISTRACTORS = 200
# Rendered (height, width).
_C.DATASETS.SYNTHETIC.SIZE = [128, 64]
# Seed of the benchmark itself (independent of SEED, which drives training).
_C.DATASETS.SYNTHETIC.SEED = 0

_C.DATALOADER = CN()
# "NaiveIdentitySampler" (P x K identity-balanced) or "TrainingSampler" (plain shuffle).
_C.DATALOADER.SAMPLER_TRAIN = "NaiveIdentitySampler"
# K: images per identity in a P x K batch.
_C.DATALOADER.NUM_INSTANCE = 4
# Worker processes of each DataLoader (0 = load in the main process).
_C.DATALOADER.NUM_WORKERS = 2

_C.SOLVER = CN()
_C.SOLVER.AMP = CN()
# Mixed precision on CUDA.
_C.SOLVER.AMP.ENABLED = False
# bf16 autocast on CPU (compressreid addition).
_C.SOLVER.BF16_CPU = False
# Optimizer: Adam, AdamW or SGD.
_C.SOLVER.OPT = "Adam"
_C.SOLVER.MAX_EPOCH = 120
# Iterations per epoch; 0 = len(train set) // IMS_PER_BATCH as fast-reid computes it.
_C.SOLVER.ITERS_PER_EPOCH = 0
_C.SOLVER.BASE_LR = 3.5e-4
# Learning-rate factor for biases and for the head's parameters.
_C.SOLVER.BIAS_LR_FACTOR = 1.0
_C.SOLVER.HEADS_LR_FACTOR = 1.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 5e-4
_C.SOLVER.WEIGHT_DECAY_BIAS = 5e-4
_C.SOLVER.WEIGHT_DECAY_NORM = 5e-4
# "MultiStepLR" or "CosineAnnealingLR" (per epoch, after warmup and DELAY_EPOCHS).
_C.SOLVER.SCHED = "MultiStepLR"
_C.SOLVER.DELAY_EPOCHS = 0
_C.SOLVER.ETA_MIN_LR = 1e-7
# Epochs at which MultiStepLR multiplies the LR by GAMMA.
_C.SOLVER.STEPS = [40, 90]
_C.SOLVER.GAMMA = 0.1
# Warmup from BASE_LR * WARMUP_FACTOR over WARMUP_ITERS iterations ("linear", "constant" or "exp").
_C.SOLVER.WARMUP_FACTOR = 0.1
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_METHOD = "linear"
# Iterations during which MODEL.FREEZE_LAYERS stay frozen.
_C.SOLVER.FREEZE_ITERS = 0
# Epochs between checkpoints.
_C.SOLVER.CHECKPOINT_PERIOD = 20
# Global batch size (split across DDP ranks, as in fast-reid).
_C.SOLVER.IMS_PER_BATCH = 64
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
# "value" or "norm".
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0

_C.TEST = CN()
# Epochs between evaluations during training (0 = only at the end).
_C.TEST.EVAL_PERIOD = 20
# Batch size of feature extraction.
_C.TEST.IMS_PER_BATCH = 128
# Distance: "cosine" or "euclidean".
_C.TEST.METRIC = "cosine"
# Rank cut-off of the CMC curve.
_C.TEST.MAX_RANK = 50
# 0 = dense distance matrix; k > 0 = exact faiss top-k search in chunks (large galleries). The run
# reports when k was too small for every true match to land in the top k.
_C.TEST.TOPK = 0
# How the top-k search (TOPK > 0) stores the gallery: "fp32" (float32 in memory, exact search) or "int8"
# (int8 codes in memory, a quarter of fp32; candidates by int8 products, then each query's RESCORE_WINDOW
# best re-scored exactly in FP32 from a float32 file in the temp directory, TMPDIR). int8 results equal
# fp32's whenever the window holds the true top k; the run notes queries for which it likely did not.
_C.TEST.GALLERY_STORAGE = "fp32"
# Candidates per query that GALLERY_STORAGE "int8" re-scores exactly (>= TOPK); 0 = 3 x TOPK. On the
# 1M-gallery benchmark (README) 1.2 x TOPK already gave the exact mAP and 2 x TOPK identical top-k lists; 20 x TOPK
# lets the worst-case error bound prove all but a few queries (metric rescore_unproven_queries).
_C.TEST.RESCORE_WINDOW = 0
_C.TEST.ROC = CN()
# Verification metrics (ROC, TPR at FPR 1e-4/1e-3/1e-2, distance distributions) on the dense matrix.
_C.TEST.ROC.ENABLED = True
_C.TEST.FLIP = CN()
# Average the embeddings of the image and its horizontal flip.
_C.TEST.FLIP.ENABLED = False
_C.TEST.AQE = CN()
# Alpha-weighted average query expansion.
_C.TEST.AQE.ENABLED = False
_C.TEST.AQE.QE_TIME = 1
_C.TEST.AQE.QE_K = 5
_C.TEST.AQE.ALPHA = 3.0
_C.TEST.RERANK = CN()
# k-reciprocal re-ranking (Zhong et al. 2017).
_C.TEST.RERANK.ENABLED = False
_C.TEST.RERANK.K1 = 20
_C.TEST.RERANK.K2 = 6
_C.TEST.RERANK.LAMBDA = 0.3
# Number of worst queries (lowest AP) drawn as rank lists.
_C.TEST.WORST_QUERIES = 8
# Gate rules checked once after evaluation, on every test set, e.g. "mAP >= 50", "mAP >= reference - 1.0",
# "rank1 >= 0.9 * teacher on DukeMTMC"; see compressreid.gates for the grammar. Each rule's metric, reference and
# test set are checked against what the stage reports before any work. Empty = the run is "ungated", never
# "accepted" (the pipeline refuses it unless PIPELINE.ALLOW_UNGATED).
_C.TEST.GATES = []
# metrics.json of a reference run, for rules that name "reference" (checked to exist before any work).
_C.TEST.GATE_REFERENCE = ""
_C.TEST.COLLAPSE = CN()
# The built-in check every evaluated model passes, gates or not: its gallery embeddings still tell images apart.
# Mean cosine between two different gallery embeddings: healthy BNNeck students and teachers here measure
# 0.01-0.03, an untrained R50 0.93, a model fed the wrong normalisation (normalised twice) 1.0000.
_C.TEST.COLLAPSE.MAX_MEAN_COSINE = 0.99
# Distinct nearest gallery entries per query: about 0.85 here; a constant output gives 1 / number of queries.
_C.TEST.COLLAPSE.MIN_DISTINCT_NN_SHARE = 0.05

# Folder of a run: config.yaml (the merged config, unchanged), metrics.json, plots, checkpoints.
_C.OUTPUT_DIR = "output"
# Seed of every random number generator a run uses.
_C.SEED = 0
# cudnn.benchmark; unused on CPU.
_C.CUDNN_BENCHMARK = False

_C.DISTILL = CN()
_C.DISTILL.TEACHERS = CN()
# Teacher config files (yaml, _BASE_ allowed): each describes its model and its INPUT.SIZE_TRAIN, at
# which it gets the batch (resized when the student's size differs). Several = an ensemble.
_C.DISTILL.TEACHERS.CONFIGS = []
# One checkpoint per entry of CONFIGS; empty = each config's own MODEL.WEIGHTS.
_C.DISTILL.TEACHERS.WEIGHTS = []
# Weight of each teacher's distillation terms; empty = 1 / number of teachers each.
_C.DISTILL.TEACHERS.SCALES = []
# Run the teachers under bf16 autocast (faster on CPUs with AVX512-BF16/AMX and on GPUs; targets stay fp32).
_C.DISTILL.TEACHERS.BF16 = False
# Run the teachers in channels_last memory format (faster convolutions on recent CPUs and GPUs).
_C.DISTILL.TEACHERS.CHANNELS_LAST = False
# Also train on the student's own supervised losses (MODEL.LOSSES); False = distillation terms only.
_C.DISTILL.SUPERVISED = True
# Train the student into the teacher's embedding space (same dimension, EmbeddingRegression without
# projection) so student query features can be searched against a gallery the teacher embedded.
_C.DISTILL.GALLERY_COMPATIBLE = False
_C.DISTILL.LOSSES = CN()
# Distillation losses registered in compressreid.distill.DISTILL_LOSSES: LogitKD, EmbeddingRegression,
# RKDDistance, RKDAngle, SimilarityPreserving, PKT, ListwiseRanking, FeatureMapDistill.
_C.DISTILL.LOSSES.NAME = ("LogitKD",)
_C.DISTILL.LOSSES.KD = CN()
# Logit distillation divergence: "kl" (Hinton et al. 2015) or "js" (symmetric Jensen-Shannon). It needs
# teacher and student classifiers over the same identity set (same training datasets and classes).
_C.DISTILL.LOSSES.KD.DIVERGENCE = "kl"
# Softmax temperature; the loss is multiplied by T^2 so gradient magnitudes do not depend on T.
_C.DISTILL.LOSSES.KD.TEMPERATURE = 4.0
# Weight of the term.
_C.DISTILL.LOSSES.KD.SCALE = 1.0
_C.DISTILL.LOSSES.EMBED = CN()
# Embedding regression distance: "l2" (mean squared error) or "cosine" (mean of 1 - cos).
_C.DISTILL.LOSSES.EMBED.MODE = "cosine"
# Student -> teacher projection: "auto" (a learned linear map when the dims differ, identity when they
# match), "linear" (always learned) or "none" (dims must match; forced by GALLERY_COMPATIBLE).
_C.DISTILL.LOSSES.EMBED.PROJECTION = "auto"
_C.DISTILL.LOSSES.EMBED.SCALE = 1.0
_C.DISTILL.LOSSES.RKD_D = CN()
# Weight of RKD distance (Park et al. 2019 use 1 for metric learning, 25 for classification).
_C.DISTILL.LOSSES.RKD_D.SCALE = 1.0
_C.DISTILL.LOSSES.RKD_A = CN()
# Weight of RKD angle (Park et al. 2019 use 2 for metric learning, 50 for classification).
_C.DISTILL.LOSSES.RKD_A.SCALE = 2.0
_C.DISTILL.LOSSES.SP = CN()
# Similarity-preserving: stage indices into feature_info (negative = from the last; the same index in
# both models); empty = on the embeddings.
_C.DISTILL.LOSSES.SP.STAGES = []
# Weight (Tung & Mori 2019 use 3000 on CIFAR feature maps).
_C.DISTILL.LOSSES.SP.SCALE = 1.0
_C.DISTILL.LOSSES.PKT = CN()
# Weight of probabilistic knowledge transfer (Passalis & Tefas 2018) on the embeddings.
_C.DISTILL.LOSSES.PKT.SCALE = 1.0
_C.DISTILL.LOSSES.LISTWISE = CN()
# Temperatures of the per-anchor softmax over cosine similarities, for the student and the teacher.
_C.DISTILL.LOSSES.LISTWISE.STUDENT_TEMPERATURE = 0.1
_C.DISTILL.LOSSES.LISTWISE.TEACHER_TEMPERATURE = 0.1
_C.DISTILL.LOSSES.LISTWISE.SCALE = 1.0
_C.DISTILL.LOSSES.FEATURE = CN()
# Feature-map distillation: "fitnet" (MSE through a 1x1 conv + BN adapter) or "overhaul" (Heo et al.
# 2019: margin ReLU on the teacher's map, partial L2).
_C.DISTILL.LOSSES.FEATURE.MODE = "fitnet"
# Student stage indices into feature_info (negative = from the last).
_C.DISTILL.LOSSES.FEATURE.STAGES = [-1]
# Teacher stage indices paired with STAGES; empty = the same indices. Indices count the teacher's declared
# taps: multi-branch teachers (MGN, HAA) declare branch taps after the trunk's, so name them explicitly.
_C.DISTILL.LOSSES.FEATURE.TEACHER_STAGES = []
_C.DISTILL.LOSSES.FEATURE.SCALE = 1.0


_C.PRUNE = CN()
# The student to prune: a run folder holding config.yaml and model_final.pth (a distilled or trained student).
# Empty = this config's own model and MODEL.WEIGHTS.
_C.PRUNE.SOURCE = ""
# Channel importance: "l1" / "l2" (filter weight magnitude), "bn_scale" (|gamma| of the following BN, as in
# network slimming) or "taylor" (first-order Taylor, |w * dL/dw|, from a few training batches).
_C.PRUNE.IMPORTANCE = "l2"
# Rank channels across all layers at once (True) or prune every layer by the same ratio (False).
_C.PRUNE.GLOBAL = False
# What RATIO removes: "macs" or "params".
_C.PRUNE.TARGET = "macs"
# Fraction of the source model's MACs (or parameters) to remove, 0 < RATIO < 1.
_C.PRUNE.RATIO = 0.5
# Keep every pruned width a multiple of this (8 or 16 suit SIMD and INT8 kernels); 1 = no rounding.
_C.PRUNE.ROUND_TO = 8
# Number of pruning steps; each removes part of the target and is followed by FINETUNE_ITERS of fine-tuning.
_C.PRUNE.STEPS = 2
# Distillation fine-tuning iterations after each step (the distillation engine, SOLVER.* for the optimizer).
_C.PRUNE.FINETUNE_ITERS = 200
# Fine-tuning teacher: "unpruned" (the source student before pruning) or "teacher" (the source run's own
# distillation teachers, DISTILL.TEACHERS of its config).
_C.PRUNE.TEACHER = "unpruned"

_C.QUANT = CN()
# The FP32 model to quantize: a run folder holding config.yaml and model_final.pth (a distilled, trained or
# pruned student). Empty = this config's own model and MODEL.WEIGHTS.
_C.QUANT.SOURCE = ""
# "ptq" (post-training static quantization in ONNX Runtime) or "qat" (quantization-aware fine-tuning with
# distillation from the FP32 model, then the same INT8 export).
_C.QUANT.METHOD = "ptq"
# ONNX opset of the exported graphs (>= 17; torch's exporter writes 18 natively and its down-conversion to 17
# fails on ReduceMean, so 18 is what works).
_C.QUANT.OPSET = 18
# Activation type: "uint8" or "int8" (weights are always int8). Measured with ONNX Runtime 1.32 on x86: with
# uint8 activations every Conv(+ReLU) and Add fuses into QLinearConv/QLinearAdd; with int8 activations ReLU-ending
# convolutions stay FP32 between Q/DQ pairs (11 of 20 in ResNet-18), so int8 is slower. Without VNNI, u8 x s8
# pairs are summed in saturating int16: the targets' weight bits (QUANT.WEIGHT_BITS) take care of that. PTQ and
# QAT both follow it.
_C.QUANT.ACTIVATION_TYPE = "uint8"
# Quantize convolution and linear weights per output channel (symmetric INT8); False = per tensor.
_C.QUANT.PER_CHANNEL = True
_C.QUANT.CALIBRATION = CN()
# Training-split images used to calibrate activation ranges (never query or gallery images).
_C.QUANT.CALIBRATION.NUM_IMAGES = 256
# Activation range estimator: "minmax", "percentile" or "entropy" (ONNX Runtime's calibrators).
_C.QUANT.CALIBRATION.METHOD = "minmax"
# Percentile kept by the "percentile" method.
_C.QUANT.CALIBRATION.PERCENTILE = 99.999
# Histogram bins of the "percentile" and "entropy" methods (entropy simulates 256-512 quantized levels over them,
# so it needs many more: with ONNX Runtime's quantize_static default of 128 it degenerates to MinMax).
_C.QUANT.CALIBRATION.HISTOGRAM_BINS = 2048
# Images per calibration batch.
_C.QUANT.CALIBRATION.BATCH_SIZE = 32
# PTQ only: how the integer weights are rounded after calibration. "gptq": each convolution's weights rounded
# to minimise its output error on the calibration images (GPTQ, compressreid.quant.gptq), layer by layer on what
# the quantized layers before it produce; "nearest": ONNX Runtime's quantize_static rounding; "auto": GPTQ for the
# formats with 7-bit weights (the portable targets), and when that file fails a TEST.GATES rule the nearest-rounded
# file is judged too and ships if it passes (before any FP32 fallback); nearest for 8-bit weights. Same format and
# scales either way.
# Measured (AVX2, 3 calibration samples; docs/results/int8.md, "PTQ weight rounding"): 7-bit, ResNet-18 1/4, mAP
# drop 0.49 -> 0.08, embedding cosine 0.9888 -> 0.9937; 8-bit, no mAP gain on ResNet-18 1/4 or ResNet-18-IBN 1/4.
# "gptaq": GPTQ fitted to the FP32 layer's output on the FP32 graph's own inputs (asymmetric calibration), not the
# default: cosine +0.002 on MobileNetV3-small without a mAP gain, the mAP drop up on ResNet-18 1/4, ResNet-18-IBN 1/4
# (0.09 -> 0.33) and the demo, the R50-IBN teacher level (docs/results/int8.md). Its codes correct the all-INT8 graph's
# upstream error; the fallback's sensitivity scan and FP32-node trials reuse them where that error is smaller.
_C.QUANT.WEIGHT_ROUNDING = "auto"
# PTQ only: add to each integer layer's bias the mean shift quantization puts on its output channels (FP32 graph
# minus quantized graph, over the calibration images, layer by layer). Off: on top of GPTQ it raised the mAP drop
# on 3 of 4 models measured (MobileNetV3-small: 1.06 -> 1.34, 3 calibration samples; docs/results/int8.md).
_C.QUANT.BIAS_CORRECTION = False
_C.QUANT.FALLBACK = CN()
# When a gate fails, keep the most sensitive nodes in FP32 (one more at a time) until the gates pass: weighted
# layers and the element-wise joins (residual Add, gate Mul) the format quantizes (compressreid.quant.ptq.FALLBACK_OPS).
_C.QUANT.FALLBACK.ENABLED = True
# At most this many nodes stay FP32 (layers and joins together); the gate failure stands beyond it.
_C.QUANT.FALLBACK.MAX_FP32_LAYERS = 6
# Order in which nodes are kept FP32, read from one judged file per node (QUANT.FALLBACK.SCAN): "mAP" (its mAP drop
# to FP32) or "cosine" (its embedding cosine to FP32).
_C.QUANT.FALLBACK.RANK_BY = "mAP"
# Each node's file: "quantize_alone" (that node INT8, the rest FP32; the costliest node first) or "revert_alone"
# (that node FP32, the rest INT8; the node that wins most back first: NNCF's accuracy-control ranking). A QAT file
# is always scanned "revert_alone": its nodes are put back in float in the exported file (compressreid.quant.revert).
_C.QUANT.FALLBACK.SCAN = "quantize_alone"
_C.QUANT.QAT = CN()
# Fine-tuning iterations with fake quantization (SOLVER.* gives the optimizer; BASE_LR is usually small).
_C.QUANT.QAT.ITERS = 300
# Learning rate of the QAT fine-tuning (SOLVER.BASE_LR is the training recipe's, too large here).
_C.QUANT.QAT.BASE_LR = 0.001
# From this iteration on, BN statistics stop updating (they are folded into the convolutions for INT8).
_C.QUANT.QAT.FREEZE_BN_ITER = 100
# From this iteration on, activation ranges stop updating, so the last iterations train with the final scales.
_C.QUANT.QAT.FREEZE_OBSERVER_ITER = 200
_C.QUANT.BENCHMARK = CN()
# Timed runs per latency measurement (after warm-up) and the runtime's intra-op thread count (0 = default).
_C.QUANT.BENCHMARK.ITERS = 20
_C.QUANT.BENCHMARK.THREADS = 0
# Batch sizes each shipped file's latency is measured at (in its target's runtime) and recorded on its card.
_C.QUANT.BENCHMARK.BATCHES = (1, 8, 32)
# The INT8 file and its FP32 source are timed in turn in ROUNDS rounds (ITERS calls each, spread over the rounds
# and rounded up to whole rounds; no more rounds than ITERS), so a shared machine's drift cancels in the per-round
# ratios; the card's speed-up is their median, its range their minimum and maximum.
_C.QUANT.BENCHMARK.ROUNDS = 5
# The batch size the file is deployed at (one of BATCHES; a tracker embeds the crops of one frame: 1 by default).
_C.QUANT.BENCHMARK.DEPLOY_BATCH = 1
# What a target does when its INT8 file ran slower than FP32 at DEPLOY_BATCH in every round: "ship_fp32" (default) ships
# the FP32 model in the target's input convention instead (the card names the INT8 file, which stays, and why it was not
# shipped), so what ships is never slower than FP32 where it was measured; "warn" ships the INT8 file and says so (for
# an artifact that does not depend on the build machine's timing). A speed-up that straddles 1 across rounds ships INT8
# (warning where its median is below 1). Measured on Zen 4 at 64x32 (docs/results/speed.md): OSNet x0.25 ships FP32,
# ResNet-18 1/4 and the demo student INT8; an A/A pair was called slower 2 times in 400.
_C.QUANT.BENCHMARK.WHEN_SLOWER = "ship_fp32"
# Deployment targets, each writing its own file judged in its own runtime (compressreid.quant.targets); the first
# is the run's primary file (student_int8.onnx), the others student_int8.<target>.onnx. "ort_portable": ONNX
# Runtime, exact on every CPU kind (x86 with or without AVX-512/VNNI, ARM64) because its 7-bit weights cannot
# saturate an int16 pair sum; "ort_vnni": ONNX Runtime, 8-bit weights, needs VNNI/AMX or ARM dot product;
# "openvino": OpenVINO's CPU plugin (pip install 'compressreid[openvino]'), the portable format; "boxmot": the
# portable file under a name BoxMOT resolves, taking BoxMOT's ImageNet-normalised RGB crops, with its sidecar;
# "tensorrt": symmetric int8 activations for TensorRT's explicit quantization (checked structurally here).
_C.QUANT.TARGETS = ("ort_portable",)
# Weight bits: 0 = each target's own (7 for the portable ones, 8 for ort_vnni); 7 or 8 forces them. A portable
# target with 8 is refused: its promise cannot be proven.
_C.QUANT.WEIGHT_BITS = 0
# Input convention of the shipped files (compressreid.export.conventions): "rgb255" (RGB 0..255, normalisation
# inside the graph: fast-reid's), "rgb_imagenet" (RGB /255 then ImageNet mean/std: torchvision's, BoxMOT's),
# "bgr255", "bgr_imagenet" (OpenCV's channel order). Calibration and every gate feed the file this convention.
_C.QUANT.INPUT_CONVENTION = "rgb255"
_C.QUANT.BOXMOT = CN()
# The boxmot target also writes <file>.onnx.metadata.json (model_name, img_size), which BoxMOT >= 23 reads first;
# without it BoxMOT can only name architectures it registers from the file name (resnet50, osnet_x0_25, ...).
_C.QUANT.BOXMOT.SIDECAR = True
_C.QUANT.RUNTIME_PARITY = CN()
# How close each target's runtime on this machine must stay to the file's own Q/DQ semantics (the file run node
# by node), on 64 query embeddings: a target rule added to TEST.GATES, against runtime bugs (ORT's per-tensor
# re-quantization of fallback layers gave mean 0.90, a merged double Q/DQ 0.965). Healthy files differ by the
# runtimes' requantization rounding: down to mean 0.991 / min 0.982 (OSNet, ORT on VNNI), 0.9946 / 0.991 (OpenVINO,
# the demo model, AVX2). Saturation cannot be told from that rounding by these numbers (AVX2, 8-bit weights:
# 0.9955 / 0.977 on the demo model): the targets' accumulation bound is what excludes it.
_C.QUANT.RUNTIME_PARITY.MIN_COSINE_MEAN = 0.99
_C.QUANT.RUNTIME_PARITY.MIN_COSINE_MIN = 0.95
# For a runtime that does not execute the Q/DQ graph step by step but re-fuses it with its own rounding (OpenVINO's
# CPU plugin), agreement with the Q/DQ semantics is replaced by: its embeddings must be no further from FP32 than the
# file's Q/DQ semantics are (mean cosine to FP32 on the same 64 query images, runtime_fp32_gap = Q/DQ's minus the
# runtime's), every integer layer of the file must run in integers (runtime_float_layers <= 0), and MIN_COSINE_MIN
# still applies. Measured on an Intel Xeon with AMX: OpenVINO's files of ResNet-18 1/4 and the R50-IBN 1/4 teacher
# were the closest to FP32 of every target (cosine 0.9949 and 0.9934, best mAP of the CPU targets) yet rejected at
# runtime_cosine_mean 0.9886 / 0.9889 < 0.99 by the rule above.
_C.QUANT.RUNTIME_PARITY.MAX_FP32_GAP = 0.001

_C.PIPELINE = CN()
# Stages, run in order: "teacher" (train, or load when its config names MODEL.WEIGHTS), "distill", "prune",
# "quantize". Each stage reads the artifact of the stage before it.
_C.PIPELINE.STAGES = ("teacher", "distill", "prune", "quantize")
# One config file per entry of STAGES (the stage's own tool config, with its TEST.GATES).
_C.PIPELINE.CONFIGS = ()
# A stage without TEST.GATES would hand its model on unjudged (its status is "ungated", never "accepted"): the
# pipeline refuses such a plan before any stage runs unless this is True.
_C.PIPELINE.ALLOW_UNGATED = False

def get_cfg() -> CN:
    """Return a fresh, mutable copy of the defaults."""
    return _C.clone()
