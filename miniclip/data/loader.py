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
  BadSampleError (missing file, truncated image, empty caption) names the sample and stops the
  epoch; any other exception is re-raised as a RuntimeError naming the sample: it is a bug.
- Bad samples, with skip_bad_samples=True. A BadSampleError is counted instead (`loader.skipped`,
  one message per bad sample) and the epoch's end warns with the first names. With drop_last=True
  (training: full batches, ranks in lockstep) each bad sample's place is taken by the next good
  sample of the rank's order after the batch (wrapping around; that sample is then seen twice in
  the epoch, with the same augmentation), so every batch stays full, the
  epoch has exactly len(loader) batches, and batch k is still a function of (seed, epoch, k): a
  resumed run gets the same batches. With drop_last=False (evaluation) a bad sample is left out:
  the batch is shorter, and a batch with no good sample is not yielded. Too many bad samples mean
  broken data, not a few bad files: more than MAX_BAD_FRACTION of the samples tried (judged once
  MIN_TRIED were tried, and at the epoch's end), a batch that cannot be filled, or an epoch with no
  batch stop with a UserError naming the count and the first bad samples.
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
from itertools import chain

import numpy as np

from miniclip.data.files import BadSampleError
from miniclip.errors import UserError

THREAD_NAME = "miniclip-loader"   # the worker threads are named miniclip-loader_0, _1, ...
MAX_BAD_FRACTION = 0.5   # skipping stops when more of the samples tried than this are bad ...
MIN_TRIED = 32           # ... once this many were tried: a few bad ones among the first say little
SHOWN = 3                # bad samples named in a warning or an error


class Loader:
    """Batches of a dataset, epoch by epoch: `for images, texts in loader.epoch(e)`.

    dataset      len() and dataset[i] -> (image, caption or label); describe(i) for error messages
    transform    (image, rng) -> float32 (3, S, S), e.g. transforms.image_transform(S, is_train)
    workers      threads preparing batches ahead (0: everything in the calling thread)
    seed         with the epoch number, fixes the order and every sample's augmentation
    shuffle      False: the dataset's own order (for evaluation)
    drop_last    leave out the last, smaller batch (and make all ranks equally long); with
                 skip_bad_samples, bad samples are replaced so that every batch stays full
    rank, world_size   this process's shard of a data-parallel run
    tokenize     texts -> token ids, applied to each batch's captions in the worker thread
    skip_bad_samples   skip and count samples that raise BadSampleError instead of stopping
                 (within limits: see "Bad samples" above)
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

    def _shard(self, epoch):
        """This rank's samples of `epoch`, in order, before drop_last cuts it to whole batches."""
        n = len(self.dataset)
        order = np.random.default_rng((self.seed, epoch)).permutation(n) if self.shuffle else np.arange(n)
        return order[self.rank::self.world_size]

    def batch_indices(self, epoch):
        """The dataset indices of each batch this rank loads in `epoch` (bad samples not replaced)."""
        shard = self._shard(epoch)
        if self.drop_last:
            shard = shard[:len(self) * self.batch_size]
        return [shard[k:k + self.batch_size] for k in range(0, len(shard), self.batch_size)]

    def epoch(self, epoch, start=0):
        """Yield the batches of one epoch, in order: (images (B, 3, S, S) float32, texts).

        start: skip the first `start` batches without loading them (a resumed run continues
        mid-epoch with exactly the batches it had not seen)."""
        self.skipped = []
        bad = {}   # dataset index -> message: a sample tried twice (own batch, replacement) counts once
        tried = bad_tries = yielded = 0
        prepared = self._prepared(range(start, len(self)), self._shard(epoch), epoch)
        try:
            for batch, batch_tried, batch_bad in prepared:
                tried += batch_tried
                bad_tries += len(batch_bad)
                if batch_bad:
                    bad.update(batch_bad)
                    self.skipped = list(bad.values())
                if tried >= MIN_TRIED and bad_tries > MAX_BAD_FRACTION * tried:
                    raise self._too_many(f"{bad_tries} of the {tried} samples tried in epoch {epoch} are bad")
                if batch is not None:   # None: every sample of the batch was bad (drop_last=False)
                    yielded += 1
                    yield batch
        finally:
            prepared.close()   # runs _prepared's finally now: pending batches cancelled, threads joined
        if yielded == 0 and bad:
            raise self._too_many(f"epoch {epoch} has no batch: all {tried} samples tried are bad")
        if bad_tries > MAX_BAD_FRACTION * tried:
            raise self._too_many(f"{bad_tries} of the {tried} samples tried in epoch {epoch} are bad")
        if bad:
            warnings.warn(f"skipped {len(bad)} bad samples in epoch {epoch} (see loader.skipped); "
                          f"the first: {'; '.join(self.skipped[:SHOWN])}")

    def _too_many(self, what, skipped=None):
        skipped = self.skipped if skipped is None else skipped
        return UserError(f"too many bad samples to skip: {what}; the first: {'; '.join(skipped[:SHOWN])}")

    def _prepared(self, ks, shard, epoch):
        """(batch, tried, bad) for each batch k in ks, in order: made here (workers=0) or ahead by threads."""
        if self.workers == 0:
            for k in ks:
                yield self._make_batch(k, shard, epoch)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix=THREAD_NAME)
        pending = deque()   # futures in batch order: the bounded queue
        try:
            for k in ks:
                pending.append(pool.submit(self._make_batch, k, shard, epoch))
                if len(pending) == self.workers * self.prefetch:
                    yield pending.popleft().result()   # result() re-raises a worker's exception here
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)

    def _make_batch(self, k, shard, epoch):
        """Load, transform and stack batch k of `shard`; runs in a worker thread.

        Returns (batch or None, samples tried, {index: message} of the bad ones)."""
        size, n = self.batch_size, len(shard)
        own = shard[k * size:(k + 1) * size].tolist()
        candidates = iter(own)
        fill = self.drop_last and self.skip_bad_samples
        if fill:   # then the rest of the shard after this batch, wrapping around: replacements
            end = (k + 1) * size
            candidates = chain(own, (int(shard[(end + j) % n]) for j in range(n - len(own))))
        images, texts, bad, tried = [], [], {}, 0
        for index in candidates:
            if len(images) == len(own):
                break
            tried += 1
            try:
                image, text = self.dataset[index]
                # The augmentation's randomness depends on (seed, epoch, sample) only, so the sample
                # looks the same whichever thread prepares it.
                images.append(self.transform(image, np.random.default_rng((self.seed, epoch, index))))
                texts.append(text)
            except BadSampleError as e:
                if not self.skip_bad_samples:
                    raise
                bad[index] = str(e)
                if tried >= MIN_TRIED and len(bad) > MAX_BAD_FRACTION * tried:
                    raise self._too_many(f"{len(bad)} of the {tried} samples tried for batch {k} of epoch "
                                         f"{epoch} are bad", list(bad.values())) from None
            except Exception as e:
                where = self.dataset.describe(index) if hasattr(self.dataset, "describe") else "no description"
                raise RuntimeError(f"loading sample {index} ({where}) failed: {type(e).__name__}: {e}") from e
        if fill and len(images) < len(own):
            rank = f" of rank {self.rank}" if self.world_size > 1 else ""
            raise self._too_many(f"batch {k} of epoch {epoch} cannot be filled: of the {n} samples{rank}, "
                                 f"{len(bad)} are bad and {len(images)} good, fewer than a batch of {size}",
                                 list(bad.values()))
        if not images:
            return None, tried, bad
        texts = self.tokenize(texts) if self.tokenize is not None else texts
        return (np.stack(images), texts), tried, bad   # images: (B, 3, S, S)
