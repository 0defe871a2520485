"""The threaded loader: same batches for any number of workers, errors, bad samples skipped (full
batches, exact epochs and resumes, limits), shutdown, sharding."""
import threading
import time
import warnings

import numpy as np
import pytest

from miniclip.data.files import BadSampleError
from miniclip.data.loader import MIN_TRIED, THREAD_NAME, Loader
from miniclip.errors import UserError
from miniclip.data.shapes import ShapesDataset
from miniclip.data.transforms import image_transform


class Numbers:
    """dataset[i] = (a 4x4 image of value i, "caption i"); optionally slow, or failing at some indices."""

    def __init__(self, n, bad=(), broken=(), delay=0.0):
        self.n, self.bad, self.broken, self.delay = n, set(bad), set(broken), delay

    def __len__(self):
        return self.n

    def describe(self, index):
        return f"number {index}"

    def __getitem__(self, index):
        time.sleep(self.delay)
        if index in self.bad:
            raise BadSampleError(f"number {index}: bad data")
        if index in self.broken:
            raise ZeroDivisionError("a bug")
        return np.full((4, 4, 3), index, np.uint8), f"caption {index}"


def first_pixel(image, rng):
    """A transform that keeps the sample's value and adds its random draw, to check the rng."""
    return np.array([[[image[0, 0, 0] + rng.random()]]], np.float32)   # (1, 1, 1)


def loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def collect(loader, epoch=0):
    return [(images.copy(), texts) for images, texts in loader.epoch(epoch)]


def test_same_batches_for_0_1_and_3_workers():
    dataset = ShapesDataset(45, image_size=32, seed=5)
    transform = image_transform(32, is_train=True)   # random: each sample draws from its own rng
    runs = [collect(Loader(dataset, 8, transform, workers=w, seed=1), epoch=2) for w in (0, 1, 3)]
    assert [len(texts) for _, texts in runs[0]] == [8, 8, 8, 8, 8, 5]
    for run in runs[1:]:
        for (images, texts), (images0, texts0) in zip(run, runs[0]):
            assert texts == texts0
            np.testing.assert_array_equal(images, images0)
    assert runs[0][0][0].dtype == np.float32 and runs[0][0][0].shape == (8, 3, 32, 32)


def test_order_is_a_seeded_permutation_per_epoch():
    loader = Loader(Numbers(20), 6, first_pixel, workers=2, seed=3)
    values = lambda epoch: [int(v) for images, _ in loader.epoch(epoch) for v in images.ravel()]
    assert sorted(values(0)) == list(range(20))
    assert values(0) == values(0) and values(0) != values(1)
    assert values(0) == np.concatenate(loader.batch_indices(0)).tolist()
    captions = [t for _, texts in loader.epoch(0) for t in texts]
    assert captions == [f"caption {i}" for i in values(0)]
    in_order = Loader(Numbers(20), 6, first_pixel, workers=2, shuffle=False)
    assert [int(v) for images, _ in in_order.epoch(0) for v in images.ravel()] == list(range(20))


def test_starting_mid_epoch_gives_the_remaining_batches():
    loader = Loader(Numbers(20), 6, first_pixel, workers=2, seed=3)
    whole = collect(loader, epoch=1)
    rest = [(images.copy(), texts) for images, texts in loader.epoch(1, start=2)]
    assert len(rest) == 2
    for (images, texts), (images0, texts0) in zip(rest, whole[2:]):
        assert texts == texts0
        np.testing.assert_array_equal(images, images0)


def test_augmentation_changes_between_epochs_but_not_between_runs():
    loader = Loader(Numbers(20), 6, first_pixel, workers=2, seed=3)

    def draws(epoch):   # sample index -> the random number its transform drew
        values = np.concatenate([images.ravel() for images, _ in loader.epoch(epoch)])
        return dict(zip(values.astype(int).tolist(), (values % 1).tolist()))

    assert draws(0) == draws(0)
    assert all(draws(0)[i] != draws(1)[i] for i in range(20))


def test_tokenize_is_applied_per_batch():
    loader = Loader(Numbers(10), 4, first_pixel, workers=2, shuffle=False, tokenize=lambda texts: np.array(
        [len(t) for t in texts]))
    tokens = [t for _, t in loader.epoch(0)]
    np.testing.assert_array_equal(tokens[0], [9, 9, 9, 9])
    np.testing.assert_array_equal(tokens[2], [9, 9])


def test_a_bug_in_a_worker_is_raised_with_the_sample_and_stops_the_threads():
    loader = Loader(Numbers(40, broken={13}), 4, first_pixel, workers=3, shuffle=False)
    message = r"loading sample 13 \(number 13\) failed: ZeroDivisionError: a bug"
    with pytest.raises(RuntimeError, match=message) as e:
        list(loader.epoch(0))
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    assert loader_threads() == []


def test_bad_samples_stop_the_epoch_or_are_skipped_and_counted():
    with pytest.raises(BadSampleError, match="number 5: bad data"):
        list(Loader(Numbers(12, bad={5}), 4, first_pixel, workers=2, shuffle=False).epoch(0))
    loader = Loader(Numbers(12, bad={1, 5, 8, 9, 10, 11}), 4, first_pixel, workers=2, shuffle=False,
                    skip_bad_samples=True)
    with pytest.warns(UserWarning, match="skipped 6 bad samples in epoch 0"):
        batches = collect(loader)
    # Batch [8, 9, 10, 11] is all bad, so it is not yielded at all.
    assert [texts for _, texts in batches] == [["caption 0", "caption 2", "caption 3"],
                                               ["caption 4", "caption 6", "caption 7"]]
    assert loader.skipped == [f"number {i}: bad data" for i in (1, 5, 8, 9, 10, 11)]
    assert loader_threads() == []


def values_of(batches):
    return [[int(v) for v in images.ravel()] for images, _ in batches]


def train_like_the_trainer(loader, total_steps, resume_at=None):
    """The trainer's loop (miniclip/train.py): count steps and batches, start each epoch at the batch
    it stopped at, a new epoch when the batch count reaches len(loader). Optionally stop at step
    `resume_at` and go on as a resumed run would (from (epoch, batch) alone). The sample values of
    each step; passes over the loader are bounded, so a loader that ends epochs early fails here
    instead of hanging."""
    steps, epoch, batch = [], 0, 0
    for _ in range(3 * total_steps):
        for images, _ in loader.epoch(epoch, start=batch):
            steps.append([int(v) for v in images.ravel()])
            batch += 1
            if len(steps) in (total_steps, resume_at):
                break
        if batch == len(loader):
            epoch, batch = epoch + 1, 0
        if len(steps) == total_steps:
            return steps
    raise AssertionError(f"the loop made {len(steps)} of {total_steps} steps in {3 * total_steps} passes")


@pytest.mark.parametrize("bad", [{3, 11}, {0, 1, 2, 3}, {16, 17, 18, 19}, {2, 7, 12, 13, 14, 15}],
                         ids=["scattered", "first-batch", "last-batch", "a-whole-batch"])
def test_training_batches_stay_full_and_exact_with_bad_samples(bad):
    """With drop_last (the trainer's loader) every batch is full, the epoch has len(loader) batches
    whatever is bad, and a batch depends on (seed, epoch, k) only: resumed runs get the same."""
    def loader(workers=2):
        return Loader(Numbers(20, bad=bad), 4, first_pixel, workers=workers, shuffle=False, drop_last=True,
                      skip_bad_samples=True)
    with pytest.warns(UserWarning, match=f"skipped {len(bad)} bad samples in epoch 0"):
        batches = values_of(loader().epoch(0))
    assert len(batches) == 5 and all(len(b) == 4 for b in batches)
    for values, own in zip(batches, np.arange(20).reshape(5, 4).tolist()):
        good = [i for i in own if i not in bad]
        assert values[:len(good)] == good                  # its own good samples, in order
        # then the next good samples after the batch, wrapping around; none twice in a batch
        after = [i % 20 for i in range(own[-1] + 1, own[-1] + 20) if i % 20 not in bad and i % 20 not in own]
        assert values[len(good):] == after[:4 - len(good)]
    # Any number of workers, any start: the same batches.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert values_of(loader(workers=0).epoch(0)) == batches
        assert values_of(loader(workers=3).epoch(0, start=2)) == batches[2:]


def test_the_trainers_loop_ends_and_a_resumed_run_sees_the_same_steps():
    """Bad first batch (was: one batch trained twice), bad last batch (was: a hang after step 1)."""
    for bad in ({0, 1, 2, 3}, {16, 17, 18, 19}, {5}):
        loader = Loader(Numbers(20, bad=bad), 4, first_pixel, workers=2, seed=7, drop_last=True,
                        skip_bad_samples=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            whole = train_like_the_trainer(loader, total_steps=12)
            resumed = train_like_the_trainer(loader, total_steps=12, resume_at=7)
        assert resumed == whole
        first_epoch = whole[:5]
        assert all(len(step) == 4 for step in whole)
        assert len({tuple(step) for step in first_epoch}) == 5   # no batch trained twice


def test_a_dataset_whose_samples_are_all_bad_stops_with_a_user_error():
    """Was: the epoch yielded nothing and the trainer's loop went round for ever at step 0."""
    for drop_last, message in ((True, r"batch 0 of epoch 0 cannot be filled: of the 16 samples, 16 are bad and "
                                      r"0 good, fewer than a batch of 4"),
                               (False, r"epoch 0 has no batch: all 16 samples tried are bad")):
        loader = Loader(Numbers(16, bad=range(16)), 4, first_pixel, workers=2, shuffle=False,
                        drop_last=drop_last, skip_bad_samples=True)
        with pytest.raises(UserError, match=message + r".*the first: number 0: bad data; number 1: bad data; "
                                                      r"number 2: bad data$"):
            list(loader.epoch(0))
        assert loader_threads() == []


def test_more_than_half_bad_stops_once_enough_were_tried():
    bad = [i for i in range(200) if i % 3 != 0]                     # two thirds bad
    loader = Loader(Numbers(200, bad=bad), 4, first_pixel, workers=2, shuffle=False, skip_bad_samples=True)
    with pytest.raises(UserError, match=r"too many bad samples to skip: \d+ of the \d+ samples tried in epoch 0 "
                                        r"are bad; the first: number 1: bad data"):
        list(loader.epoch(0))
    tried = MIN_TRIED if MIN_TRIED % 4 == 0 else MIN_TRIED + 4 - MIN_TRIED % 4
    assert len(loader.skipped) <= tried   # it stopped at the first batch past MIN_TRIED samples
    # The same fraction among fewer samples than MIN_TRIED is judged at the epoch's end.
    loader = Loader(Numbers(9, bad={1, 2, 4, 5, 7}), 4, first_pixel, workers=0, shuffle=False,
                    skip_bad_samples=True)
    with pytest.raises(UserError, match="5 of the 9 samples tried in epoch 0 are bad"):
        list(loader.epoch(0))
    # Half bad is still skipped.
    loader = Loader(Numbers(8, bad={0, 1, 2, 3}), 4, first_pixel, workers=0, shuffle=False,
                    skip_bad_samples=True)
    with pytest.warns(UserWarning, match="skipped 4 bad samples"):
        assert values_of(loader.epoch(0)) == [[4, 5, 6, 7]]


def test_bad_samples_on_data_parallel_ranks_keep_them_in_lockstep():
    shards = [Loader(Numbers(50, bad={0, 7, 21, 33, 34}), 4, first_pixel, workers=1, seed=9, rank=rank,
                     world_size=3, drop_last=True, skip_bad_samples=True) for rank in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = [[len(b) for b in values_of(shard.epoch(1))] for shard in shards]
    assert sizes == [[4] * 4] * 3


@pytest.mark.parametrize("stop", ["break", "close"])
def test_stopping_early_leaves_no_thread_running(stop):
    loader = Loader(Numbers(200, delay=0.002), 4, first_pixel, workers=3, prefetch=4)
    if stop == "break":
        for _ in loader.epoch(0):
            break
    else:
        batches = loader.epoch(0)
        next(batches)
        assert len(loader_threads()) == 3   # the workers are busy preparing the next batches
        batches.close()
    assert loader_threads() == []


@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_cover_each_sample_once(drop_last):
    n, batch_size, world_size = 50, 4, 3
    shards = [Loader(Numbers(n), batch_size, first_pixel, workers=1, seed=9, rank=rank, world_size=world_size,
                     drop_last=drop_last) for rank in range(world_size)]
    seen = [[int(v) for images, _ in shard.epoch(4) for v in images.ravel()] for shard in shards]
    everything = sorted(sum(seen, []))
    assert len(everything) == len(set(everything)), "a sample was given to two ranks"
    batches = [len(list(shard.epoch(4))) for shard in shards]
    assert batches == [len(shard) for shard in shards]
    if drop_last:
        # Equal numbers of full batches on every rank, so data-parallel steps stay in lockstep.
        assert batches == [n // world_size // batch_size] * world_size
        assert all(len(s) == batches[0] * batch_size for s in seen)
    else:
        assert everything == list(range(n))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rank"):
        Loader(Numbers(4), 2, first_pixel, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        Loader(Numbers(4), 0, first_pixel)
