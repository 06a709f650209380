"""Boundary checks (issue 5): each bad input is a UserError naming the value, raised before any
training step or file write."""

import pytest
import torch

from cnnlab.errors import UserError
from cnnlab.models import build_model
from cnnlab.train import validate


class _DS:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)


def test_int_options():
    assert validate.check_int("--batch-size", 64, 1) == 64
    with pytest.raises(UserError, match="--batch-size must be >= 1, got 0"):
        validate.check_int("--batch-size", 0, 1)
    with pytest.raises(UserError, match="--batch-size must be >= 1, got -3"):
        validate.check_int("--batch-size", -3, 1)
    with pytest.raises(UserError, match="--epochs must be >= 0, got -1"):
        validate.check_int("--epochs", -1, 0)
    with pytest.raises(UserError, match="integer"):
        validate.check_int("--epochs", 1.5, 0)


def test_output_dir(tmp_path):
    assert validate.check_output_dir(tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is gone
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="file exists and is not a directory"):
        validate.check_output_dir(f)
    with pytest.raises(UserError, match="file/sub is not writable"):
        validate.check_output_dir(f / "sub")


def test_wrong_channels_and_size_for_the_model():
    lenet = build_model("lenet-native")
    assert validate.check_model_input(lenet, (1, 32, 32), "lenet-native") == 10
    with pytest.raises(UserError, match="lenet-native takes 1-channel images, the data has 3 channels"):
        validate.check_model_input(lenet, (3, 32, 32), "lenet-native")
    with pytest.raises(UserError, match=r"lenet-native cannot take images of shape \[1, 28, 28\]"):
        validate.check_model_input(lenet, (1, 28, 28), "lenet-native")


def test_model_state_is_unchanged_by_the_dry_run():
    resnet = build_model("resnet18")
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    validate.check_model_input(resnet, (1, 32, 32))
    assert resnet.training
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())


def test_labels_out_of_range_and_empty_dataset():
    lenet = build_model("lenet-native")
    good = _DS(torch.zeros(3, 1, 32, 32), torch.tensor([0, 9, 3]))
    validate.check_data_for_model(lenet, {"train set": good, "dev set": None})
    with pytest.raises(UserError, match="the train set has label 10 at index 1; .*labels in 0..9"):
        validate.check_data_for_model(lenet, {"train set": _DS(torch.zeros(3, 1, 32, 32),
                                                               torch.tensor([0, 10, -1]))})
    with pytest.raises(UserError, match="label -1 at index 0"):
        validate.check_labels(torch.tensor([-1, 3]), 10, "dev set")
    with pytest.raises(UserError, match="the dev set is empty"):
        validate.check_data_for_model(lenet, {"dev set": _DS(torch.zeros(0, 1, 32, 32),
                                                             torch.zeros(0, dtype=torch.long))})
    with pytest.raises(UserError, match="the train set is empty"):
        validate.check_dataset([], "train set")
