"""Session-wide settings for the whole suite.

The fast operators run with the autotuner off (today's rules, `fast_conv.choose_algorithm`), so
every test sees the same algorithm whatever the machine and its load, and nothing is timed; the
tuner's own tests turn it on explicitly. Its cache goes to a temporary folder, never the user's.
Set in os.environ, so CLI subprocesses inherit both.
"""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _autotune_off_with_a_private_cache(tmp_path_factory):
    before = {k: os.environ.get(k) for k in ("CNNLAB_AUTOTUNE", "CNNLAB_CACHE_DIR")}
    os.environ["CNNLAB_AUTOTUNE"] = "off"
    os.environ["CNNLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cnnlab-cache"))
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
