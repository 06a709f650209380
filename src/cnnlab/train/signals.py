"""Graceful Ctrl-C / SIGTERM during training.

The first SIGINT or SIGTERM only sets a flag: the trainer finishes (or abandons) the current step,
saves a resumable checkpoint atomically and returns exit status 128 + signal (130 for SIGINT, 143
for SIGTERM). A second signal exits at once with that status (the previous checkpoint is intact
because every save is atomic).

    with StopOnSignal() as stop:
        for batch in loader:
            ...
            if stop.requested:
                save(); return stop.exit_code
"""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal:
    """Context manager turning the first SIGINT/SIGTERM into a flag and the second into an exit."""

    def __init__(self, signals=SIGNALS, message: str | None = None):
        self.signals = tuple(signals)
        self.message = message
        self.signum: int | None = None
        self._previous: dict = {}
        self._pid = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum) if self.signum is not None else 0

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self):
        self._pid = os.getpid()
        # Python only delivers signals to the main thread; elsewhere leave handling as it is.
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:
            # A forked DataLoader worker inherited this handler: Ctrl-C reaches the whole process
            # group; the worker keeps serving batches and the main process decides.
            return
        if self.signum is None:
            self.signum = signum
            name = signal.Signals(signum).name
            msg = self.message or (f"{name} received: stopping after this step and saving a "
                                   "resumable checkpoint (send it again to quit at once)")
            print(msg, file=sys.stderr, flush=True)
            return
        print(f"{signal.Signals(signum).name} received again: quitting now; the last saved "
              "checkpoint is intact", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)
