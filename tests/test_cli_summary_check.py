"""`cnnlab summary` and `cnnlab check`: output, exit codes, one-line user errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.cli import main

LAYER_KEYS = {"name", "type", "input_shape", "output_shape", "params", "flops"}
TOP_KEYS = {"model", "input_size", "layers", "trainable_params", "buffer_values", "lab_params",
            "flops", "macs"}


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_summary_lenet_json(capsys):
    data = run_json(capsys, ["summary", "lenet", "--json"])
    assert TOP_KEYS <= set(data)
    assert data["model"] == "lenet" and data["input_size"] == [1, 1, 32, 32]
    assert all(LAYER_KEYS <= set(row) for row in data["layers"])
    assert [row["flops"] for row in data["layers"]] == [122304, 0, 241600, 400, 48120, 10080, 840]
    assert [row["output_shape"] for row in data["layers"]][-1] == [1, 10]
    assert (data["lab_params"], data["trainable_params"], data["flops"]) == (61706, 61706, 423344)


def test_summary_resnet18_json(capsys):
    data = run_json(capsys, ["summary", "resnet18", "--json", "--input-size", "1,1,32,32"])
    assert data["lab_params"] == 11185034
    assert data["trainable_params"] == 11175434
    assert data["buffer_values"] == 9600
    assert data["flops"] == 35529728
    assert data["layers"][0]["flops"] == 819200


def test_summary_cifar_default_input_and_batch(capsys):
    data = run_json(capsys, ["summary", "resnet18-cifar", "--json"])
    assert data["input_size"] == [1, 3, 32, 32]
    one = data["flops"]
    data = run_json(capsys, ["summary", "resnet18-cifar", "--json", "--input-size", "2,3,32,32"])
    assert data["flops"] == 2 * one


def test_summary_table_explains_the_figures(capsys):
    assert main(["summary", "resnet18"]) == 0
    out = capsys.readouterr().out
    for figure in ["11,185,034", "11,175,434", "9,600", "35,529,728", "819,200",
                   "11,165,834", "19,200", "layer2.0.downsample.0"]:
        assert figure in out, figure


@pytest.mark.parametrize("argv, words", [
    (["summary", "lenet6"], ["unknown model", "lenet-native", "resnet18-cifar"]),
    (["summary", "lenet", "--input-size", "a,b"], ["--input-size", "'a,b'"]),
    (["summary", "lenet", "--input-size", "1,1,32"], ["4 positive integers"]),
    (["summary", "lenet", "--input-size", "0,1,32,32"], ["4 positive integers"]),
    (["summary", "lenet", "--input-size", "1,3,32,32"], ["1 input channel", "gives 3"]),
    (["summary", "resnet18-cifar", "--input-size", "1,1,32,32"], ["3 input channel"]),
    (["summary", "lenet", "--input-size", "1,1,8,8"], ["cannot run on input size 1,1,8,8"]),
])
def test_summary_user_errors_exit_2_with_one_line(capsys, argv, words):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab summary: error:")
    assert "Traceback" not in captured.err
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("command", ["summary", "check"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "--json" in capsys.readouterr().out


def fake_checks(monkeypatch, op_checks, model_checks):
    import cnnlab.cli.check as check_cli
    import cnnlab.models.selfcheck as selfcheck

    monkeypatch.setattr(check_cli, "_op_checks", lambda: op_checks)
    monkeypatch.setattr(selfcheck, "run_model_checks", lambda: model_checks)


def check(name, passed, diff=1e-12):
    return {"name": name, "max_abs_diff": diff, "tolerance": 1e-9, "passed": passed}


def test_check_exit_codes(monkeypatch, capsys):
    fake_checks(monkeypatch, [check("op a", True)], [check("model b", True)])
    assert main(["check"]) == 0
    assert "all 2 checks passed" in capsys.readouterr().out

    fake_checks(monkeypatch, [check("op a", True)], [check("model [b]", False, 0.5)])
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 checks failed" in out and "model [b]" in out  # names are not rich markup

    fake_checks(monkeypatch, [], [])
    assert main(["check"]) == 1  # nothing checked is not a pass


def test_check_json_combines_op_and_model_checks(monkeypatch, capsys):
    failing = {**check("model b", False), "max_abs_diff": None, "error": "boom"}
    fake_checks(monkeypatch, [check("op a", True)], [failing])
    assert main(["check", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in data["checks"]] == ["op a", "model b"]
    assert data["checks"][1]["max_abs_diff"] is None

    # a NaN difference (a broken operator) is printed as null: strict JSON, no bare NaN
    fake_checks(monkeypatch, [check("op a", False, diff=float("nan"))], [])
    assert main(["check", "--json"]) == 1
    data = json.loads(capsys.readouterr().out, parse_constant=lambda name: 1 / 0)
    assert data["checks"][0]["max_abs_diff"] is None


@pytest.mark.slow
def test_check_for_real(capsys):
    # Every operator and model check of the tree, as `cnnlab check --json` runs them (~15 s).
    assert main(["check", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert all(c["passed"] for c in checks)
    names = " ".join(c["name"] for c in checks)
    assert "lenet[fast]" in names and "torchvision" in names


def test_console_script_exit_status():
    # The `cnnlab` console script that pyproject.toml declares passes main()'s status to the shell
    # (in-process tests cover the successful paths; one start costs seconds, so one run here).
    from importlib.metadata import entry_points

    (entry,) = entry_points(group="console_scripts", name="cnnlab")
    assert entry.value == "cnnlab.cli:main", "pyproject.toml's [project.scripts] changed"
    script = Path(sys.executable).parent / "cnnlab"
    # Where the package is installed the script sits next to Python; else run the entry point
    # as that script would (it calls it and exits with what it returns).
    argv = ([str(script)] if script.exists() else
            [sys.executable, "-c", "import sys; from importlib.metadata import entry_points; "
             "sys.exit(entry_points(group='console_scripts', name='cnnlab')['cnnlab'].load()())"])
    bad = subprocess.run([*argv, "summary", "alexnet"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "known models: lenet, lenet-native" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_help_lists_every_model():
    from cnnlab.cli.summary import MODELS_HELP
    from cnnlab.models import MODEL_NAMES

    assert MODELS_HELP == "one of: " + ", ".join(MODEL_NAMES)
