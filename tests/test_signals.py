"""StopOnSignal: the first SIGINT/SIGTERM sets a flag, the second exits at once, handlers are
restored afterwards. (The end-to-end interrupt of a training run is in test_resume.py.)"""

import os
import signal

import pytest

from cnnlab.train.signals import StopOnSignal


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_sets_flag_second_exits(sig, code, capsys):
    before = signal.getsignal(sig)
    with StopOnSignal() as stop:
        assert not stop.requested and stop.exit_code == 0
        os.kill(os.getpid(), sig)
        assert stop.requested and stop.exit_code == code and stop.signal_name == sig.name
        with pytest.raises(SystemExit) as info:
            os.kill(os.getpid(), sig)
        assert info.value.code == code
    assert signal.getsignal(sig) is before
    err = capsys.readouterr().err
    assert "stopping after this step" in err and "quitting now" in err
