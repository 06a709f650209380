"""Strict state loading (issue 5, test 9): a LeNet checkpoint loaded as ResNet18 says exactly
which keys are missing, unexpected and mis-shaped; non-strict loading reports what it skipped."""

import pytest
import torch

from cnnlab.errors import UserError
from cnnlab.models import build_model
from cnnlab.train import checkpoint as ckpt
from cnnlab.train.loading import compare_state, load_state_strict


def test_lenet_checkpoint_loaded_as_resnet18_lists_every_kind_of_key(tmp_path):
    lenet = build_model("lenet-native")
    path = ckpt.save_checkpoint(tmp_path / "lenet.pt", ckpt.model_payload("lenet-native", {}, lenet))
    resnet = build_model("resnet18")
    before = {k: v.clone() for k, v in resnet.state_dict().items()}

    with pytest.raises(UserError) as info:
        load_state_strict(resnet, ckpt.load_checkpoint(path)["state_dict"], source=str(path))
    msg = str(info.value)
    # Expected sets computed independently from the two models' own key/shape lists.
    lenet_shapes = {k: tuple(v.shape) for k, v in lenet.state_dict().items()}
    resnet_shapes = {k: tuple(v.shape) for k, v in resnet.state_dict().items()}
    missing = [k for k in resnet_shapes if k not in lenet_shapes]
    unexpected = [k for k in lenet_shapes if k not in resnet_shapes]
    mis_shaped = [k for k in lenet_shapes if k in resnet_shapes and lenet_shapes[k] != resnet_shapes[k]]
    assert mis_shaped == ["conv1.weight", "conv1.bias"]  # LeNet [6,1,5,5] vs ResNet [64,1,7,7]
    assert f"{len(missing)} missing keys ({missing[0]}" in msg
    assert f"{len(unexpected)} unexpected keys ({unexpected[0]}" in msg
    assert "2 mis-shaped keys (conv1.weight: checkpoint [6, 1, 5, 5] vs model [64, 1, 7, 7]" in msg
    assert str(path) in msg and "\n" not in msg
    # nothing was loaded
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())


def test_non_strict_loads_what_fits_and_reports_the_rest():
    src = build_model("resnet18-plain")  # same keys as resnet18 ...
    dst = build_model("resnet18", num_classes=5)  # ... but another classifier size
    report = load_state_strict(dst, src.state_dict(), strict=False)
    assert report.mismatched == [("fc.weight", (10, 512), (5, 512)), ("fc.bias", (10,), (5,))]
    assert not report.missing and not report.unexpected
    assert "2 mis-shaped keys (fc.weight: checkpoint [10, 512] vs model [5, 512]" in report.describe()
    for key, value in dst.state_dict().items():
        if key.startswith("fc."):
            assert not torch.equal(value[:1], src.state_dict()[key][:1])
        else:
            assert torch.equal(value, src.state_dict()[key]), key


def test_matching_state_loads_strictly():
    a, b = build_model("lenet-native"), build_model("lenet-native")
    report = load_state_strict(b, a.state_dict())
    assert report.ok and report.describe() == "all keys match"
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert compare_state(b, {}).missing == list(b.state_dict())


def test_load_model_is_strict_unless_asked(tmp_path):
    lenet = build_model("lenet-native")
    payload = ckpt.model_payload("resnet18", {}, lenet)  # a file that lies about its model
    path = ckpt.save_checkpoint(tmp_path / "liar.pt", payload)
    with pytest.raises(UserError, match="liar.pt does not fit model ResNet18: .*missing keys"):
        ckpt.load_model(path)
    model, back = ckpt.load_model(path, strict=False)
    assert back["load_report"].unexpected and back["load_report"].mismatched
