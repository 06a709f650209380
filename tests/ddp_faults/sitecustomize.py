"""Test-only fault injection into `python -m cnnlab` processes started by torchrun.

tests/test_ddp.py puts this folder first on PYTHONPATH, so Python imports this module at the
start of every process of a launch (launcher and workers). With CNNLAB_TEST_FAULT="KIND:RANK:STEP"
the worker of that RANK, in the first attempt of the job only (TORCHELASTIC_RESTART_COUNT 0), acts
right after the update that makes its global step STEP:
    kill             SIGKILL itself (a process dying without a word)
    sigint-launcher  send SIGINT to its parent, the launcher (Ctrl-C), and wait until torchrun
                     has passed it on to this process (however busy the machine): the run
                     then stops after exactly this step
Without the variable nothing is imported or changed.
"""

import os

_SPEC = os.environ.get("CNNLAB_TEST_FAULT", "")
if _SPEC and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    _KIND, _RANK, _STEP = _SPEC.split(":")
    if os.environ.get("RANK") == _RANK:
        import signal
        import time

        from cnnlab.train.runner import Runner

        _original = Runner._train_step

        def _train_step(self, x, y):
            _original(self, x, y)
            if self.global_step == int(_STEP):
                if _KIND == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif _KIND == "sigint-launcher":
                    os.kill(os.getppid(), signal.SIGINT)
                    stop = getattr(self.guard.stop, "local", self.guard.stop)  # this process's
                    deadline = time.monotonic() + 60
                    while not stop.requested and time.monotonic() < deadline:
                        time.sleep(0.02)

        Runner._train_step = _train_step
