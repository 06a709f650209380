"""Section 5.4.4 of the lab: our ResNet18 against the library's, done right and done the lab's way.

The lab loaded paddle.vision's resnet18 weights into its own model and printed `max(diff)` = 0.
That check could not fail (see `lab_figures.TORCHVISION_CHECK`). Here:

- `proper_check`: torchvision's resnet18 with random weights *and* random, non-default BN running
  statistics and affine parameters; strict loading into ours (`stem_bias=False, in_channels=3,
  num_classes=1000`) and back; both in eval mode; a batch of 2 images of 3x64x64; max |diff| of
  the logits (`cnnlab.models.selfcheck.check_resnet18`, shared with `cnnlab check`).
- `lab_protocol`: the lab's procedure (train mode, one 3x32x32 image, max(diff)) applied to a model
  that shares *only* the final linear layer with torchvision's. It still prints 0, which shows
  the lab's 0 proved nothing: in train mode with one image, BatchNorm on the 1x1 maps of the last
  stage outputs its bias (0), so every logit equals fc.bias (up to ~1e-5 of eps round-off)
  whatever the convolutions hold.
"""

from __future__ import annotations

from unittest import mock

import torch
import torch.nn.functional as F
import torchvision

from cnnlab.models import build_model

def _ours() -> torch.nn.Module:
    return build_model("resnet18", in_channels=3, num_classes=1000, stem_bias=False)


def proper_check() -> dict:
    """The check done right, as `cnnlab check` does it (cnnlab.models.selfcheck): float64,
    random non-default BN statistics and affine parameters, strict loading both ways, eval mode,
    a batch of 2 at 3x64x64, max |diff| against a tolerance of 1e-9 x the largest logit."""
    from cnnlab.models.selfcheck import check_resnet18

    checks = [check_resnet18("native"), check_resnet18("native", reverse=True)]
    return {"checks": checks, "passed": all(c["passed"] for c in checks),
            "input": [2, 3, 64, 64], "dtype": "float64", "mode": "eval",
            "loading": "strict, both directions",
            "bn": "random running mean/var and affine parameters"}


@torch.no_grad()
def lab_protocol(seed: int = 0) -> dict:
    """The lab's check on a model whose convolutions are NOT torchvision's: still 'max(diff) = 0'.

    torch refuses train-mode BatchNorm on one value per channel (Paddle computed it: variance 0,
    output = BN bias); the lab's case is reproduced by lifting that guard for this call only.
    """
    torch.manual_seed(seed)
    ref = torchvision.models.resnet18()
    torch.manual_seed(seed + 1)
    ours = _ours()                 # its own random convolutions and BN
    ours.fc.load_state_dict(ref.fc.state_dict())   # only the last linear layer is shared
    x = torch.randn(1, 3, 32, 32)  # one image, as the lab
    result = {"input": [1, 3, 32, 32], "mode": "train",
              "loaded": "fc only (every convolution differs)"}
    # Proof that the models really differ: eval mode (before train mode touches the BN stats).
    ours.eval(), ref.eval()
    result["eval_mode_max_abs_diff"] = (ours(x) - ref(x)).abs().max().item()
    ours.train(), ref.train()      # the lab never called .eval()
    try:
        torch_diff = (ours(x) - ref(x)).max().item()
        result["torch_refusal"] = None
    except ValueError as err:      # "Expected more than 1 value per channel when training"
        torch_diff = None
        result["torch_refusal"] = str(err)
    result["torch_max_diff"] = torch_diff
    guard = getattr(F, "_verify_batch_size", None)
    if guard is not None:
        with mock.patch.object(F, "_verify_batch_size", lambda size: None):
            diff = ours(x) - ref(x)
        result["max_diff"] = diff.max().item()
        result["max_abs_diff"] = diff.abs().max().item()
    return result


def run() -> dict:
    return {"proper": proper_check(), "lab_protocol": lab_protocol()}
