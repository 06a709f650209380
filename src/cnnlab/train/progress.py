"""What a long training shows while it runs: images per second in the progress bar, and an
estimate of the whole run's time, printed early when it is long.

`ImagesPerSecond`: a rich progress column, the bar's steps per second (rich's own estimate over
its recent updates) times the images in a step.

`TimeEstimate`: times the first training steps of a run (the first step is left out: it pays
for allocations, cuDNN's autotuning, compilation) and, when the run will take longer than
`LONG_S`, prints once how long, with the suggestion of `--subset` on a CPU.
"""

from __future__ import annotations

import time

LONG_S = 120.0       # runs estimated longer than this get the estimate printed
# Steps are timed until MIN_STEPS of them and MIN_S have passed (a few slow first steps, e.g.
# while the OS flushes a freshly written data set, would mislead), or MAX_S at most.
MIN_STEPS, MIN_S, MAX_S = 10, 2.0, 15.0
EVAL_COST = 1 / 3    # an evaluated image costs about a third of a trained one (forward only)


def _column_class():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class ImagesPerSecond(ProgressColumn):
        """`12,345 img/s`: steps per second times images per step (the task's "batch" field)."""

        def render(self, task):
            speed = task.finished_speed or task.speed
            if not speed:
                return Text("– img/s", style="progress.data.speed")
            return Text(f"{speed * task.fields.get('batch', 1):,.0f} img/s",
                        style="progress.data.speed")

    return ImagesPerSecond


def images_per_second_column():
    """A rich ProgressColumn (rich is imported only when a bar is shown)."""
    return _column_class()()


def duration_text(seconds: float) -> str:
    """95 -> '1.6 min', 7200 -> '2.0 h', 12 -> '12 s'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class TimeEstimate:
    """steps: training steps still to run; evaluated: images the run will still evaluate
    (dev evaluations and the test), each weighted by `eval_cost` of a trained image;
    batch: images per step; device: torch.device of the run; say: print(line)."""

    def __init__(self, steps: int, batch: int, evaluated: int, device, say, eval_cost=EVAL_COST):
        self.steps, self.batch, self.evaluated = steps, batch, evaluated
        self.device, self.say, self.eval_cost = device, say, eval_cost
        self.done = 0
        self.start = None
        self.finished = steps < 2

    def after_step(self) -> None:
        if self.finished:
            return
        self.done += 1
        if self.start is None:           # the first step: warm-up, not timed
            self.start = self._now(sync=True)
            return
        timed = self.done - 1
        elapsed = self._now() - self.start
        enough = (timed >= MIN_STEPS and elapsed >= MIN_S) or elapsed >= MAX_S
        if not enough and self.done < self.steps:
            return
        self.finished = True
        per_step = (self._now(sync=True) - self.start) / timed
        per_image = per_step / self.batch
        total = (self.steps * per_step + self.evaluated * self.eval_cost * per_image)
        if total > LONG_S:
            hint = ("; --subset N trains on N images per part for a quick look"
                    if self.device.type == "cpu" else "")
            self.say(f"[Train] estimated time: about {duration_text(total)} on "
                     f"{self.device.type} ({self.steps:,} steps at {per_step:.3g} s, "
                     f"{self.batch / per_step:,.0f} img/s, and {self.evaluated:,} images to "
                     f"evaluate); Ctrl-C stops and saves a resumable checkpoint{hint}")

    def _now(self, sync: bool = False) -> float:
        """The clock; with `sync`, after the GPU's queued work is done (twice per run only: a
        synchronisation every step would stall the queue)."""
        if sync and self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
        return time.perf_counter()
