"""The loader: batches of (images, captions) prepared by background threads while the model trains.

What: Loader(dataset, batch_size, transform, workers=4, seed=0, ...).epoch(e) yields, in a fixed
order, (images float32 (B, 3, S, S), texts) where texts is the list of the dataset's captions (or
labels), or tokenize(texts) when a tokenize function is given.
Why threads: reading JPEGs, resizing them (Pillow) and NumPy arithmetic release the GIL, so a few
threads keep up with a training step without the start-up cost, pickling and memory copies of
worker processes.
How, and the guarantees:
- Order. Epoch e visits the samples in the permutation drawn from default_rng((seed, e)); batch k
  is a fixed slice of it, and each sample's augmentation draws from default_rng((seed, e, index)).
  So a batch is a function of (seed, epoch, k) alone: the same for workers=0, 1 or 8.
- Bounded work ahead. At most workers * prefetch batches are submitted and not yet consumed;
  the main thread takes their results in submission order.
- Errors. An exception in a worker is raised again in the main thread when its batch is due. A
  BadSampleError (missing file, truncated image, empty caption) names the sample; with
  skip_bad_samples=True it is skipped instead (the batch is one sample shorter), counted in
  `loader.skipped` and reported by a warning at the end of the epoch. Any other exception is
  re-raised as a RuntimeError naming the sample: it is a bug, never skipped.
- Shutdown. When the consumer stops early (break) or an error is raised, the generator's finally
  clause cancels the batches not started and joins the threads: none is left running.
- Sharding. With world_size processes each rank takes every world_size-th sample of the same
  permutation, so the ranks together cover each sample exactly once; with drop_last=True every
  rank gets the same number of full batches, so data-parallel steps stay in lockstep.
Checked by tests/data/test_loader.py.
"""
import math
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from miniclip.data.files import BadSampleError

THREAD_NAME = "miniclip-loader"   # the worker threads are named miniclip-loader_0, _1, ...


class Loader:
    """Batches of a dataset, epoch by epoch: `for images, texts in loader.epoch(e)`.

    dataset      len() and dataset[i] -> (image, caption or label); describe(i) for error messages
    transform    (image, rng) -> float32 (3, S, S), e.g. transforms.image_transform(S, is_train)
    workers      threads preparing batches ahead (0: everything in the calling thread)
    seed         with the epoch number, fixes the order and every sample's augmentation
    shuffle      False: the dataset's own order (for evaluation)
    drop_last    leave out the last, smaller batch (and make all ranks equally long)
    rank, world_size   this process's shard of a data-parallel run
    tokenize     texts -> token ids, applied to each batch's captions in the worker thread
    skip_bad_samples   skip and count samples that raise BadSampleError instead of stopping
    prefetch     batches prepared ahead per worker
    """

    def __init__(self, dataset, batch_size, transform, *, workers=4, seed=0, shuffle=True, drop_last=False,
                 rank=0, world_size=1, tokenize=None, skip_bad_samples=False, prefetch=2):
        if batch_size < 1 or workers < 0 or prefetch < 1:
            raise ValueError(f"need batch_size >= 1, workers >= 0, prefetch >= 1; "
                             f"got {batch_size}, {workers}, {prefetch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.dataset, self.batch_size, self.transform = dataset, batch_size, transform
        self.workers, self.seed, self.shuffle, self.drop_last = workers, seed, shuffle, drop_last
        self.rank, self.world_size, self.tokenize = rank, world_size, tokenize
        self.skip_bad_samples, self.prefetch = skip_bad_samples, prefetch
        self.skipped = []   # messages of the bad samples skipped in the current (or last) epoch

    def __len__(self):
        """Batches per epoch (the same every epoch)."""
        n = len(self.dataset)
        if self.drop_last:
            return n // self.world_size // self.batch_size
        return math.ceil(len(range(self.rank, n, self.world_size)) / self.batch_size)

    def batch_indices(self, epoch):
        """The dataset indices of each batch this rank loads in `epoch`."""
        n = len(self.dataset)
        order = np.random.default_rng((self.seed, epoch)).permutation(n) if self.shuffle else np.arange(n)
        shard = order[self.rank::self.world_size]
        if self.drop_last:
            shard = shard[:len(self) * self.batch_size]
        return [shard[k:k + self.batch_size] for k in range(0, len(shard), self.batch_size)]

    def epoch(self, epoch, start=0):
        """Yield the batches of one epoch, in order: (images (B, 3, S, S) float32, texts).

        start: skip the first `start` batches without loading them (a resumed run continues
        mid-epoch with exactly the batches it had not seen)."""
        self.skipped = []
        prepared = self._prepared(self.batch_indices(epoch)[start:], epoch)
        try:
            for batch, skipped in prepared:
                self.skipped += skipped
                if batch is not None:   # None: every sample of the batch was skipped
                    yield batch
        finally:
            prepared.close()   # runs _prepared's finally now: pending batches cancelled, threads joined
        if self.skipped:
            warnings.warn(f"skipped {len(self.skipped)} bad samples in epoch {epoch} (see loader.skipped); "
                          f"the first: {self.skipped[0]}")

    def _prepared(self, batches, epoch):
        """(batch, skipped) for each batch, in order: made here (workers=0) or ahead by the threads."""
        if self.workers == 0:
            for indices in batches:
                yield self._make_batch(indices, epoch)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix=THREAD_NAME)
        pending = deque()   # futures in batch order: the bounded queue
        try:
            for indices in batches:
                pending.append(pool.submit(self._make_batch, indices, epoch))
                if len(pending) == self.workers * self.prefetch:
                    yield pending.popleft().result()   # result() re-raises a worker's exception here
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)

    def _make_batch(self, indices, epoch):
        """Load, transform and stack the samples of one batch; runs in a worker thread."""
        images, texts, skipped = [], [], []
        for index in indices.tolist():
            try:
                image, text = self.dataset[index]
                # The augmentation's randomness depends on (seed, epoch, sample) only, so the sample
                # looks the same whichever thread prepares it.
                images.append(self.transform(image, np.random.default_rng((self.seed, epoch, index))))
                texts.append(text)
            except BadSampleError as e:
                if not self.skip_bad_samples:
                    raise
                skipped.append(str(e))
            except Exception as e:
                where = self.dataset.describe(index) if hasattr(self.dataset, "describe") else "no description"
                raise RuntimeError(f"loading sample {index} ({where}) failed: {type(e).__name__}: {e}") from e
        if not images:
            return None, skipped
        texts = self.tokenize(texts) if self.tokenize is not None else texts
        return (np.stack(images), texts), skipped   # images: (B, 3, S, S)

