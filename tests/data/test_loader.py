"""The threaded loader: same batches for any number of workers, errors, shutdown, sharding."""
import threading
import time

import numpy as np
import pytest

from miniclip.data.files import BadSampleError
from miniclip.data.loader import THREAD_NAME, Loader
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
