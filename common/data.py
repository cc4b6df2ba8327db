"""Batches from a map-style dataset: deterministic shuffling, rank sharding, threaded decoding.

A dataset is any object with ``__len__`` and ``get(index, rng)`` returning a tuple of numpy arrays;
``rng`` is a ``numpy.random.RandomState`` seeded from (seed, epoch, index), so every sample's
augmentation is a pure function of the run's seed, the epoch and the sample index. Together with
:class:`common.layers.CounterDropout` this makes a resumed run repeat the uninterrupted one exactly.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["BatchLoader", "epoch_order", "validate_files"]


def validate_files(items, check, what, fix="", num_workers=4, show=5):
    """Run ``check(item)`` on every item; raise ONE ``ValueError`` listing the first failures and their count.

    ``check`` raises ``ValueError`` or ``OSError`` whose message names the file and the problem (it
    should only read headers, so validating a dataset before training is cheap). ``what`` names the
    items (e.g. ``pix2pix train images``) and ``fix`` is appended as the suggested remedy.
    """
    items = list(items)

    def problem(item):
        try:
            check(item)
        except (ValueError, OSError) as e:
            return str(e)
        return None

    if num_workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(num_workers) as pool:
            problems = [p for p in pool.map(problem, items) if p is not None]
    else:
        problems = [p for p in map(problem, items) if p is not None]
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems[:show])
        more = f"\n  ... and {len(problems) - show} more" if len(problems) > show else ""
        raise ValueError(f"{len(problems)} of {len(items)} {what} cannot be used:\n{listed}{more}"
                         + (f"\n{fix}" if fix else ""))


def epoch_order(n, epoch, seed, *, shuffle=True, rank=0, group_size=1):
    """Sample indices of ``epoch`` for ``rank``: one permutation shared by all ranks, split evenly.

    The permutation is padded (repeating its head) to a multiple of ``group_size`` so every rank runs
    the same number of steps, as data-parallel training requires.
    """
    order = np.random.RandomState((seed * 7919 + epoch) % (2 ** 32)).permutation(n) if shuffle else np.arange(n)
    pad = (-n) % group_size
    if pad:
        order = np.concatenate([order, order[:pad]])
    return order[rank::group_size]


class BatchLoader:
    """Iterate ``dataset`` in batches of stacked arrays.

    Args:
        dataset: object with ``__len__`` and ``get(index, rng)``.
        batch_size: samples per batch; the last incomplete batch is dropped when ``drop_last``.
        shuffle: reshuffle each epoch (deterministically from ``seed`` and the epoch).
        rank, group_size: data-parallel shard of this process.
        num_workers: threads decoding samples (0: in the calling thread).
    """

    def __init__(self, dataset, batch_size=1, *, shuffle=True, seed=0, rank=0, group_size=1, drop_last=True,
                 num_workers=2):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.group_size = rank, group_size
        self.drop_last = drop_last
        self.pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None
        self.prefetcher = ThreadPoolExecutor(1) if num_workers > 0 else None
        per_rank = -(-len(dataset) // group_size)
        self.steps_per_epoch = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} is larger than the {per_rank} samples each of the "
                             f"{group_size} rank(s) gets; lower batch_size")

    def __len__(self):
        return self.steps_per_epoch

    def _sample(self, index, epoch):
        rng = np.random.RandomState((self.seed * 1_000_003 + epoch * 100_003 + int(index)) % (2 ** 32))
        return self.dataset.get(int(index), rng)

    def _batch(self, indices, epoch):
        if self.pool is not None:
            samples = list(self.pool.map(lambda i: self._sample(i, epoch), indices))
        else:
            samples = [self._sample(i, epoch) for i in indices]
        return tuple(np.stack(col) for col in zip(*samples))

    def epoch(self, epoch, start_step=0):
        """Yield the batches of ``epoch`` from step ``start_step`` (0-based), prefetching one ahead."""
        order = epoch_order(len(self.dataset), epoch, self.seed, shuffle=self.shuffle, rank=self.rank,
                            group_size=self.group_size)
        chunks = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.steps_per_epoch)]
        chunks = chunks[start_step:]
        if self.pool is None:
            for c in chunks:
                yield self._batch(c, epoch)
            return
        pending = self.prefetcher.submit(self._batch, chunks[0], epoch) if chunks else None
        for i in range(len(chunks)):
            batch = pending.result()
            pending = self.prefetcher.submit(self._batch, chunks[i + 1], epoch) if i + 1 < len(chunks) else None
            yield batch
