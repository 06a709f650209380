"""`cnnlab --help` must answer at once: building the parser may not import torch (seconds here)."""

import subprocess
import sys


def test_building_the_parser_does_not_import_torch():
    code = ("import sys; from cnnlab.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_data_names_still_import_lazily():
    import cnnlab.data as data

    assert callable(data.load_mnist) and callable(data.TensorLoader)
    assert "idx:DIR" in data.SOURCE_HELP
