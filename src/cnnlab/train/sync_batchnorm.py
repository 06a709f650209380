"""Batch normalisation over the global batch of a data-parallel run, on any device and backend.

torch's `nn.SyncBatchNorm` refuses CPU tensors (ValueError under gloo, torch 2.14), so on CPU every
`nn.BatchNorm2d` of a data-parallel model is replaced by `SyncBatchNorm2d` (`convert_sync_batchnorm`):
the statistics of one step are those of the whole global batch, as in a one-process run, not of
this process's shard. On CUDA/NCCL torch's own SyncBatchNorm is used instead (`cnnlab.train.
distributed`).

    SyncBatchNormFunction   the autograd Function (forward and hand-written backward), like the
                            lab's operators; `group=None` = one process (no communication)
    SyncBatchNorm2d         an nn.BatchNorm2d (same parameters, buffers and state-dict keys) whose
                            training forward uses it
    convert_sync_batchnorm  replace every nn.BatchNorm2d of a model, in place, sharing parameters

Communication: one all-reduce of [sum x, sum x^2, count] per channel in the forward and one of
[sum dy, sum dy*x_hat] in the backward (float64 sums: E[x^2] - E[x]^2 then loses nothing that
matters in float32).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

_DIMS = (0, 2, 3)  # every axis but the channel axis of [N, C, H, W]


def _channel_view(t: torch.Tensor, dtype) -> torch.Tensor:
    return t.to(dtype).view(1, -1, 1, 1)  # [C] -> [1, C, 1, 1], broadcasts over [N, C, H, W]


class SyncBatchNormFunction(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, mean and var per channel over the samples
    of every process of `group` (over x alone when `group` is None).

    x [N, C, H, W] (N may be 0 on some processes), weight and bias [C] or None ->
    (y [N, C, H, W], mean [C], unbiased var [C]); mean and var (float64, for the running
    statistics) take no gradient. M = the number of elements per channel over all processes.

    Backward (derivation). With x_hat_i = (x_i - mean) * invstd, invstd = (var + eps)^-1/2 and
    var = (1/M) sum_j (x_j - mean)^2 (biased), every x_j of every process moves mean and var:
        d mean / d x_i = 1/M,   d var / d x_i = (2/M) (x_i - mean),
        dL/dx_i = weight * invstd * (dy_i - (1/M) sum_j dy_j - x_hat_i (1/M) sum_j dy_j x_hat_j),
    where j runs over all M elements of the channel, on every process: the two sums are the
    backward's all-reduce. dL/dweight = sum_i dy_i x_hat_i and dL/dbias = sum_i dy_i over THIS
    process's elements only: under DistributedDataParallel the parameter gradients are averaged
    across processes afterwards, with the losses scaled so that the average is the gradient of
    the global batch (`cnnlab.train.distributed`), as torch's SyncBatchNorm does.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        c = x.shape[1]
        count = torch.full((1,), x.numel() // max(c, 1), dtype=torch.float64, device=x.device)
        stats = torch.cat([x.sum(_DIMS, dtype=torch.float64),
                           (x * x).sum(_DIMS, dtype=torch.float64), count])  # [2C + 1]
        if group is not None:
            dist.all_reduce(stats, group=group)
        total = stats[2 * c]
        if total < 2:
            raise ValueError(f"batch norm in training needs more than 1 value per channel, got "
                             f"{int(total)} over all processes (input {list(x.shape)} here)")
        mean = stats[:c] / total
        var = (stats[c:2 * c] / total - mean * mean).clamp_min(0)  # biased, as the forward uses
        invstd = torch.rsqrt(var + eps)
        x_hat = (x - _channel_view(mean, x.dtype)) * _channel_view(invstd, x.dtype)
        y = x_hat
        if weight is not None:
            y = y * weight.view(1, -1, 1, 1)
        if bias is not None:
            y = y + bias.view(1, -1, 1, 1)
        ctx.save_for_backward(x_hat, weight, invstd)
        ctx.total, ctx.group, ctx.has_bias = total, group, bias is not None
        unbiased = var * (total / (total - 1))
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x_hat, weight, invstd = ctx.saved_tensors
        c = x_hat.shape[1]
        local = torch.cat([dy.sum(_DIMS, dtype=torch.float64),
                           (dy * x_hat).sum(_DIMS, dtype=torch.float64)])  # [2C], this process
        grad_weight = local[c:].to(dy.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = local[:c].to(dy.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = local.clone()
            if ctx.group is not None:
                dist.all_reduce(sums, group=ctx.group)  # over every process's elements
            mean_dy = _channel_view(sums[:c] / ctx.total, dy.dtype)
            mean_dy_xhat = _channel_view(sums[c:] / ctx.total, dy.dtype)
            scale = invstd if weight is None else invstd * weight.to(torch.float64)
            grad_x = (dy - mean_dy - x_hat * mean_dy_xhat) * _channel_view(scale, dy.dtype)
        return grad_x, grad_weight, grad_bias, None, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics span every process of `process_group` (the
    default group when torch.distributed is initialised, else this process alone). Evaluation
    uses the running statistics, which are updated as torch's BatchNorm updates them (momentum,
    or a cumulative average when momentum is None; unbiased variance)."""

    def __init__(self, *args, process_group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _group(self):
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group or dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        use_batch = self.training or not self.track_running_stats
        if not use_batch:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        y, mean, unbiased = SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps,
                                                        self._group())
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                        else self.momentum)
            with torch.no_grad():
                self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype),
                                                         alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype),
                                                        alpha=momentum)
        return y


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every nn.BatchNorm2d inside `module` by a SyncBatchNorm2d that shares its parameters
    and buffers (an optimizer built before keeps working; state-dict keys are unchanged) -> the
    module (itself replaced when it is a BatchNorm2d)."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNorm2d):
        sync = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, process_group=process_group)
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        if module.track_running_stats:
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, process_group)
        if converted is not child:
            setattr(module, name, converted)
    return module
