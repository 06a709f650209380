"""`TensorLoader`: mini-batches by indexing cached tensors — a DataLoader without per-item work.

`TensorLoader(ds, batch_size, shuffle=True, generator=g)` yields exactly the batches of
`torch.utils.data.DataLoader(ds, batch_size, shuffle=True, generator=g)` (both draw one
`torch.randperm(N, generator=g)` per epoch and make the same extra draws DataLoader makes), but
each batch is one `index_select` on the
dataset's `images` / `labels` tensors instead of N `__getitem__` calls and a collate. The tensors
may live on the GPU (`cnnlab.data.to_device`): batches are then cut there.
"""

from __future__ import annotations

import torch


class TensorLoader:
    """Iterate (x [B,...], y [B]) over a dataset with `.images` and `.labels` tensors
    (or a `torch.utils.data.TensorDataset` of two tensors).

    shuffle: a new permutation each epoch from `generator` (a fresh seed drawn from torch's
    global RNG when None, as DataLoader's RandomSampler does); the last batch may be smaller
    unless `drop_last`.
    """

    def __init__(self, dataset, batch_size=64, shuffle=False, generator=None, drop_last=False):
        if hasattr(dataset, "images"):
            self.images, self.labels = dataset.images, dataset.labels
        else:
            self.images, self.labels = dataset.tensors
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self):
        n = self.labels.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n, bs = self.labels.shape[0], self.batch_size
        stop = len(self) * bs
        # DataLoader draws a worker base seed at the start of every epoch, shuffled or not;
        # drawing it too keeps the random streams (and so the runs) identical to DataLoader's.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        if not self.shuffle:
            # Slices are views: no copy at all.
            for start in range(0, min(stop, n), bs):
                yield self.images[start:start + bs], self.labels[start:start + bs]
            return
        generator = self.generator
        if generator is None:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator().manual_seed(seed)
        # Drawn on the CPU generator whatever the device: the same order on CPU and GPU, and a
        # CPU generator state for exact resume; moved once to where the images are.
        order = torch.randperm(n, generator=generator).to(self.images.device)
        for start in range(0, min(stop, n), bs):
            idx = order[start:start + bs]
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)
        # RandomSampler draws one more permutation when it is exhausted (its `num_samples % n`
        # tail); drawing it too keeps the generator in step with DataLoader's across epochs.
        torch.randperm(n, generator=generator)
