"""Which algorithm each fast conv/pool layer of a training used: chosen, recorded, replayed.

cnnlab's fast convolution has several exact algorithms (`fast_conv.ALGORITHMS`), average
pooling two backward paths; they add the same products in different orders, so a result depends
on the algorithm in its last bits. `cnnlab.ops.autotune` picks one per problem key (shapes,
dtype, gradients needed). A training run (`RunAlgorithms`, entered by `train_run`):

- clears the tuner's decisions first: `cnnlab reproduce` trains several runs in one process and
  each records its own;
- chooses by the rules (autotune mode "off": they depend on the shapes only, so reruns agree
  whatever the cache holds) when --deterministic, and when data-parallel (each process timing
  for itself could choose another algorithm; every process must compute alike); otherwise as
  $CNNLAB_AUTOTUNE / `autotune.set_mode` says (default: measured, cached);
- when resumed, pins the choices its checkpoint recorded, before the first step: the same
  algorithms as before the interruption, whatever the cache or the rules say now;
- records them: `record()` ({key: {"algorithm", "source"}}, the form `autotune.pin` takes) in
  last.pt and best.pt (field "algorithms"), and `summary()` in run.json: per layer (found by
  forward pre-hooks on the model's fast Conv2D / Pool2D), the keys it ran with their choice.
"""

from __future__ import annotations

import contextlib

import torch

from cnnlab import nn as cnn
from cnnlab.ops import autotune, tune_keys


class RunAlgorithms:
    """Context manager for one training: mode and pins in force inside, decisions recorded.

    cfg: the resolved TrainConfig; resume: a `load_resume` payload (its "algorithms" are pinned);
    dist: the data-parallel context, if any."""

    def __init__(self, cfg, resume: dict | None = None, dist=None):
        self.recorded = dict((resume or {}).get("algorithms") or {})
        self.mode_set_by = ("--deterministic" if cfg.deterministic else
                            "data-parallel" if dist is not None else None)
        self.mode = None
        self._seen: dict[tuple, None] = {}     # (layer, training?, problem) in first-call order
        self._handles = []
        self._stack = contextlib.ExitStack()
        self._stats = None

    def __enter__(self) -> "RunAlgorithms":
        autotune.reset_decisions()
        self._stack.enter_context(autotune.pinned(self.recorded))
        if self.mode_set_by is not None:
            self._stack.enter_context(autotune.using("off"))
        self.mode = autotune.mode()           # a bad $CNNLAB_AUTOTUNE fails here, before step 0
        self._stats = autotune.stats()
        return self

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack.close()
        return False

    def watch(self, model: torch.nn.Module) -> None:
        """Note the problem key of every call of `model`'s fast Conv2D / Pool2D layers."""
        for name, module in model.named_modules():
            if isinstance(module, (cnn.Conv2D, cnn.Pool2D)) and module.impl == "fast":
                self._handles.append(module.register_forward_pre_hook(
                    lambda m, args, name=name: self._note(name, m, args[0])))

    def _note(self, name, module, x) -> None:
        if isinstance(module, cnn.Conv2D):
            problem = tune_keys.conv_problem(x, module.weight, module.bias, module.stride,
                                             module.padding)
            device = x.device.type
            if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
                # Conv2D casts x to autocast's dtype before the op (cnnlab.nn): the op's key
                problem = (problem[0], torch.get_autocast_dtype(device), *problem[2:])
        else:
            problem = tune_keys.pool_problem(x, module.kernel_size, module.stride,
                                             module.padding, module.mode)
        self._seen[(name, torch.is_grad_enabled(), problem)] = None

    def record(self) -> dict:
        """{key: {"algorithm", "source"}}: every choice of this run, and of the run it resumes
        (kept with the source it had then); what checkpoints store and `autotune.pin` takes."""
        now = {k: d for k, d in autotune.decisions().items() if d["source"] != "pinned"}
        return {**self.recorded, **now}

    def summary(self) -> dict:
        """For run.json: the mode, what set it, the tuning this run did, and per layer every key
        it ran with {"pass": "train" | "eval", "algorithm", "source", "key"}. Layers whose
        operator has a single path there (max pooling; pooling without a gradient) are left out:
        nothing was chosen."""
        used = autotune.decisions()
        layers: dict[str, list] = {}
        # training's keys first, then evaluation's, each in the order of their first call
        for name, training, problem in sorted(self._seen, key=lambda seen: not seen[1]):
            key = tune_keys.problem_text(problem)
            if key in used:
                layers.setdefault(name, []).append(
                    {"pass": "train" if training else "eval", **used[key], "key": key})
        stats = autotune.stats()
        return {"mode": self.mode, "mode_set_by": self.mode_set_by or "CNNLAB_AUTOTUNE",
                "pinned_from_checkpoint": len(self.recorded),
                "keys_tuned": stats["keys_tuned"] - self._stats["keys_tuned"],
                "tune_s": round(stats["tune_s"] - self._stats["tune_s"], 4),
                "layers": layers}
