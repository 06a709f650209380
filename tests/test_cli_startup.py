"""`cnnlab --help` must answer at once: building the parser may not import torch (seconds here)."""

import subprocess
import sys


def test_building_the_parser_does_not_import_torch():
    code = ("import sys; from cnnlab.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_data_names_import_lazily():
    # cnnlab.data names its contents without importing them (PEP 562): importing the package
    # pulls in no torch; the first access to a name imports the module that holds it.
    code = ("import sys; import cnnlab.data as data; before = 'torch' in sys.modules; "
            "loader = data.TensorLoader; print(before, 'torch' in sys.modules, "
            "loader.__module__, 'idx:DIR' in data.SOURCE_HELP)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "cnnlab.data.loader", "True"]
