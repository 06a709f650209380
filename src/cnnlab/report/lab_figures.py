"""The lab's published numbers and the original Paddle code's measured ones, as data.

Every figure names its source, so the report can print it beside ours:
- LAB: the seed text (NNDL chapter 5, "实验5", part 1), i.e. what the notebook printed.
- ORIGINAL: the original PaddlePaddle code re-run on a 2-core machine (PaddlePaddle 3.3.1) on the
  same 1000/200/200 MNIST images as cnnlab's bundled default (reference.md, "The original code
  measured here").
- ISSUE: the bars the reproduce issue sets (issue 3, section 4).
"""

from __future__ import annotations

LAB_SOURCE = "the lab's printed output (seed text, NNDL ch. 5 part 1)"
ORIGINAL_SOURCE = "the original Paddle code re-run on 2 CPU cores, PaddlePaddle 3.3.1 (reference.md)"
ISSUE_SOURCE = "issue 3, section 4"

# 5.1 / 5.2: the operator worked examples, exactly as the lab prints them.
WORKED_EXAMPLES = {
    "conv_2x2": {
        "what": "3x3 input 1..9, 2x2 kernel [[0,1],[2,3]] (section 5.1.3)",
        "lab": [[25.0, 31.0], [43.0, 49.0]],
    },
    "conv_multichannel": {
        "what": "2-channel 3x3 input, 3 all-ones 2x2x2 kernels, zero bias (section 5.2.1.1)",
        "lab": [[[20.0, 28.0], [44.0, 52.0]]] * 3,
    },
    "conv_shapes": {
        "what": "[2,8,8] input, 3x3 kernel, padding 1, stride 1 and 2 (section 5.1.6)",
        "lab": {"stride1": [2, 8, 8], "stride2": [2, 4, 4]},
    },
    "maxpool": {
        "what": "4x4 input 1..16, 2x2 max pooling stride 2 (section 5.2.2)",
        "lab": [[6.0, 8.0], [14.0, 16.0]],
    },
    "avgpool": {
        "what": "4x4 input 1..16, 2x2 average pooling stride 2 (section 5.2.2)",
        "lab": [[3.5, 5.5], [11.5, 13.5]],
    },
}

# 5.3.1: the lab's layer-by-layer printout for a [1,1,32,32] input (name, output shape, weight,
# bias). The lab's custom Conv2D kept its bias as [P,1] and Paddle's Linear stores [in,out].
LENET_SHAPE_WALK = [
    ("conv2d_6", [1, 6, 28, 28], [6, 1, 5, 5], [6, 1]),
    ("pool2d_2", [1, 6, 14, 14], None, None),
    ("conv2d_7", [1, 16, 10, 10], [16, 6, 5, 5], [16, 1]),
    ("pool2d_3", [1, 16, 5, 5], None, None),
    ("conv2d_8", [1, 120, 1, 1], [120, 16, 5, 5], [120, 1]),
    ("linear_0", [1, 84], [120, 84], [84]),
    ("linear_1", [1, 10], [84, 10], [10]),
]

# 5.3.2: paddle.summary / paddle.flops of LeNet-5 (1x1x32x32), per layer: (params, FLOPs).
LENET_LAYERS = [
    ("conv1", 156, 122_304),
    ("pool2 (max)", 0, 0),
    ("conv3", 2_416, 241_600),
    ("pool4 (avg)", 0, 400),
    ("conv5", 48_120, 48_120),
    ("linear6", 10_164, 10_080),
    ("linear7", 850, 840),
]
LENET_PARAMS = 61_706
LENET_FLOPS = 423_344

# 5.4.1: paddle.summary / paddle.flops of ResNet18 (1x1x32x32, 10 classes, stem conv with bias).
RESNET18_LAB_PARAMS = 11_185_034          # parameters + BN running mean/var (9,600 values)
RESNET18_LAB_TRAINABLE = 11_165_834       # old Paddle (<= 2.2): every BN tensor non-trainable
RESNET18_LAB_NONTRAINABLE = 19_200
RESNET18_TRUE_TRAINABLE = 11_175_434      # what torch's parameters() and current Paddle give
RESNET18_BN_BUFFERS = 9_600
RESNET18_FLOPS = 35_529_728
RESNET18_FLOPS_DETAIL = {"stem conv": 819_200, "BN on 64x16x16": 32_768, "adaptive avg pool": 1_024}

# 5.3.3 - 5.4.3: the three trainings. Settings are the lab's (reference.md, "Part 1").
TRAININGS = {
    "lenet": {
        "title": "LeNet-5, custom operators",
        "lr": 0.1,
        "lab": {"best_dev": 0.875, "test_acc": 0.8700, "test_loss": 0.4423},
        "original": {"test_acc": 0.870, "test_loss": 0.461, "wall_s": 509.0, "rss_gb": 4.55},
        "bar": 0.85,
    },
    "resnet18-plain": {
        "title": "ResNet18 without residual",
        "lr": 0.005,
        "lab": {"best_dev": 0.810, "test_acc": 0.8100, "test_loss": 0.5841},
        "original": {"test_acc": 0.875, "test_loss": 0.531, "wall_s": 176.0, "rss_gb": 0.78,
                     "note": "machine loaded"},
        "bar": 0.80,
    },
    "resnet18": {
        "title": "ResNet18 with residual",
        "lr": 0.01,
        "lab": {"best_dev": 0.870, "test_acc": 0.8800, "test_loss": 0.3523},
        "original": {"test_acc": 0.900, "test_loss": 0.413, "wall_s": 137.0, "rss_gb": 0.89},
        "bar": 0.87,
    },
}
TRAINING_ORDER = ["lenet", "resnet18-plain", "resnet18"]
LAB_SETTINGS = {"optimizer": "sgd", "batch_size": 64, "epochs": 5, "log_steps": 15,
                "eval_steps": 15, "seed": 100, "split": "lab (1000/200/200)"}
# The original LeNet with Paddle's own operators (not one of the lab's three trainings).
ORIGINAL_LENET_NATIVE = {"wall_s": 9.0, "test_acc": 0.890, "test_loss": 0.268, "rss_gb": 0.73}

# The original code's speed and the whole-run budget.
ORIGINAL_LENET_FORWARD = {"custom_s": 2.10, "native_s": 0.54e-3, "ratio": 3_900}
ORIGINAL_TOTAL_S = 820.0
TARGET_TOTAL_S = ORIGINAL_TOTAL_S / 10     # issue 3: at most a tenth of the original
TARGET_RSS_GB = 1.5
ORIGINAL_PEAK_RSS_GB = 4.55

# 5.3.5: the prediction demo printed "The true category is 2 and the predicted category is 2"
# for sample 1 of the first test batch of the lab's (unpublished) test list.
PREDICTION = {"sample": 1, "lab_true": 2, "lab_pred": 2}

# 5.4.4: the ResNet18 vs paddle.vision resnet18 comparison printed max(diff) = 0.
TORCHVISION_CHECK = {
    "lab_printed": "Tensor([0.])",
    "why_vacuous": [
        "a key typo ('shorcutt') and an off-by-one slice left the shortcut BN weights unloaded, "
        "and non-strict loading only warned",
        "both models ran in train mode, so BN used batch statistics, not the loaded running ones",
        "the input was 1x3x32x32: one image, and a 1x1 feature map in the last stage, where "
        "train-mode BN normalises every channel to its bias",
        "it printed max(diff), not max(|diff|): a negative difference passes as 0",
    ],
}

# ------------------------------------------------------------------ part 2 (实验5(下), CIFAR-10)
PART2_SOURCE = "reference.md, \"Part 2\""
# The notebook's run of the lab recipe, and the printed book's figures for the same code.
PART2_NOTEBOOK = {"best_dev": 0.7272, "test_acc": 0.7234, "test_loss": 0.8324}
PART2_BOOK = {"test_acc": 0.7094, "test_loss": 0.9058}
# What the fast recipe is measured against (reference.md, "Part 2 anchors and facts").
PART2_ANCHORS = [
    ("kuangliu/pytorch-cifar ResNet18", "93.02 % in 200 epochs (SGD 0.1, cosine, crop+flip)"),
    ("Lightning's CIFAR baseline (OneCycle ResNet18)", "92-93 % in 20-30 epochs"),
    ("airbench94 (its own net, one A100)", "94.01 % in 3.83 s"),
]
PART2_GOAL = {"test_acc": 0.94, "epochs": 20, "h200_s": 30.0}
