"""What the trainer reads: datasets, tokenizer and loaders, built from the command-line flags.

Training pairs come from --train-data (an OpenCLIP CSV/TSV file, or a folder of name.jpg +
name.txt pairs) or, without it, from a built-in dataset: the generated shapes (the default) or
Fashion-MNIST. The evaluation sets come with them:
- val pairs (--val-data, or the built-in "val" split): validation loss and retrieval R@k;
- zero-shot sets: for shapes, one-object images of the colour-shape pairs seen in training, of
  the held-out pairs, and of seen pairs in the held-out style (outlines on a light background),
  classified among all 36 pairs; for Fashion-MNIST its test split; and any
  --zeroshot-data class tree;
- hard negatives (shapes only): two-object images with their caption and the same caption with
  the colours or shapes swapped or the relation reversed.
The tokenizer is a merges file (--tokenizer), the one saved in --pretrained weights, or a
vocabulary learned from the training captions (small captions need few tokens, so a small text
embedding).
RunData.pair_keys(tokens) gives the multi-positive loss its keys (miniclip/losses.py): pairs
with the same key are positives. A caption that is one of a class's prompts (Fashion-MNIST's
templates) or that a CSV's class column (--csv-class-key) gives a class has that class as key,
so "a photo of a coat." and "a product photo of a coat." match; on the shapes data the key is
what the caption means (shapes.caption_meaning: colours, shapes and relation, not the wording);
any other caption is its own key, so only identical token rows match. (Identical captions alone change nothing in the CLIP loss:
their logits are equal, so the soft and the one-hot targets give the same loss and the same
gradient to the towers. It is the different captions of one class that the keys join.)
"""
import os
from dataclasses import dataclass, field

import numpy as np

from miniclip.data import (CsvDataset, FashionMNIST, ImageClassFolder, ImageTextFolder, Loader,
                           ShapesDataset, image_transform)
from miniclip.data.files import read_caption
from miniclip.data.shapes import caption, caption_hard_negatives, caption_meaning, hard_negatives
from miniclip.errors import UserError
from miniclip.tokenizer import Tokenizer, train_bpe

VOCABULARY_CAPTIONS = 20_000   # captions read to learn a vocabulary
CACHED_CAPTIONS = 32_768       # token rows whose keys and hard negatives RunData keeps


class FirstN:
    """The first n samples of a dataset (a fixed, reproducible subset)."""

    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, min(n, len(dataset))
        for name in ("classnames", "class_prompts"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self):
        return self.n

    def describe(self, index):
        return self.dataset.describe(index)

    def __getitem__(self, index):
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return self.dataset[index]


@dataclass
class ZeroShotSet:
    name: str              # the metric prefix, e.g. "zeroshot_seen"
    dataset: object        # dataset[i] = (image, class index)
    classnames: list
    prompts: list          # prompts[k]: the texts whose mean embedding is class k's classifier


@dataclass
class RunData:
    train: object
    val: object                        # pairs, or None
    zeroshot: list = field(default_factory=list)
    hard_negatives: list = field(default_factory=list)   # (image, caption, {kind: negative caption})
    tokenizer: Tokenizer = None
    class_of_caption: dict = field(default_factory=dict)   # token row (bytes) -> class index
    caption_key: object = None   # caption text -> a hashable key (or None: no key), for pair_keys
    hard_negatives_of: object = None   # caption text -> the false captions in its words (a list)
    # Per token row (bytes), for the shapes captions: what caption_key and hard_negatives_of made
    # of it, tokenized. Decoding and parsing every caption of every batch again took 7 ms a step at
    # batch 64 (6% of the default run). A dataset of N samples has at most N distinct captions;
    # both caches are emptied when they reach CACHED_CAPTIONS rows (about 100 MB), so a huge
    # generated dataset cannot grow them without bound.
    _keys: dict = field(default_factory=dict, repr=False)
    _negatives: dict = field(default_factory=dict, repr=False)

    def pair_keys(self, tokens):
        """keys (B,) int64 of a batch's token ids (B, T), a host array: the class of each caption
        that is a class prompt, else its caption_key, else its token row; numbered in order of
        first appearance, so equal keys are equal integers."""
        numbers = {}
        keys = np.empty(len(tokens), np.int64)
        for i, row in enumerate(np.ascontiguousarray(tokens)):
            row_bytes = row.tobytes()
            key = ("class", self.class_of_caption[row_bytes]) if row_bytes in self.class_of_caption else None
            if key is None and self.caption_key is not None:
                if row_bytes not in self._keys:
                    if len(self._keys) >= CACHED_CAPTIONS:
                        self._keys.clear()
                    meaning = self.caption_key(self.tokenizer.decode(row))
                    self._keys[row_bytes] = None if meaning is None else ("meaning", meaning)
                key = self._keys[row_bytes]
            keys[i] = numbers.setdefault(key or ("row", row_bytes), len(numbers))
        return keys

    def negative_tokens(self, tokens, rng):
        """Token ids (N, T) of a hard negative caption for each caption of the batch that has one
        (one of shapes.caption_hard_negatives, drawn with rng); None when the data makes none."""
        if self.hard_negatives_of is None:
            return None
        chosen = []
        for row in np.ascontiguousarray(tokens):
            key = row.tobytes()
            if key not in self._negatives:
                if len(self._negatives) >= CACHED_CAPTIONS:
                    self._negatives.clear()
                texts = self.hard_negatives_of(self.tokenizer.decode(row))
                self._negatives[key] = self.tokenizer(texts) if texts else None
            candidates = self._negatives[key]
            if candidates is not None:
                chosen.append(candidates[rng.integers(len(candidates))])
        return np.stack(chosen) if chosen else None


def caption_classes(dataset):
    """{caption: class} of a class-labelled training set: a CSV's class column, or the prompts of
    every class; {} for data without classes."""
    if isinstance(dataset, FirstN):
        return caption_classes(dataset.dataset)
    if isinstance(dataset, CsvDataset):
        return dataset.caption_classes()
    if getattr(dataset, "classnames", None) is None or not hasattr(dataset, "class_prompts"):
        return {}
    return {text: label for label, prompts in enumerate(dataset.class_prompts()) for text in prompts}


def class_of_caption(dataset, tokenizer):
    """{token row as bytes: class index} of caption_classes(dataset), as the loader tokenizes them."""
    classes = caption_classes(dataset)
    index = {label: i for i, label in enumerate(sorted(set(classes.values()), key=str))}
    captions = list(classes)
    rows = np.ascontiguousarray(tokenizer(captions)) if captions else []
    return {row.tobytes(): index[classes[text]] for row, text in zip(rows, captions)}


def open_pairs(path, args):
    """A dataset of (image, caption) pairs from a CSV/TSV file or an image+caption folder."""
    if not os.path.exists(path):
        raise UserError(f"data not found: {path}")
    kind = args.dataset_type
    if kind == "auto":
        kind = "folder" if os.path.isdir(path) else "csv"
    if kind == "folder":
        return ImageTextFolder(path)
    return CsvDataset(path, img_key=args.csv_img_key, caption_key=args.csv_caption_key, sep=args.csv_separator,
                      class_key=args.csv_class_key)


def captions_of(dataset, limit=VOCABULARY_CAPTIONS):
    """Up to `limit` captions of a pair dataset, read without decoding any image."""
    n = min(len(dataset), limit)
    if isinstance(dataset, FirstN):
        return captions_of(dataset.dataset, min(n, dataset.n))
    if isinstance(dataset, ShapesDataset):
        return [caption(dataset.scene(i)) for i in range(n)]
    if isinstance(dataset, CsvDataset):
        return [row[2] for row in dataset.rows[:n] if row[2]]
    if isinstance(dataset, ImageTextFolder):
        paths = dataset.images[:n]
        return [read_caption(os.path.splitext(p)[0] + ".txt", p) for p in paths]
    if isinstance(dataset, FashionMNIST):
        return [text for prompts in dataset.class_prompts() for text in prompts]
    raise TypeError(f"cannot read the captions of a {type(dataset).__name__}")


def build_data(args, image_size, context_length, tokenizer=None):
    """The RunData of a run: every dataset it trains and evaluates on, and its tokenizer."""
    zeroshot, negatives = [], []
    if args.train_data:
        train = open_pairs(args.train_data, args)
        val = open_pairs(args.val_data, args) if args.val_data else None
    elif args.dataset == "shapes":
        train = ShapesDataset(args.train_num_samples, image_size, "train", seed=args.seed)
        val = ShapesDataset(args.val_num_samples, image_size, "val", seed=args.seed)
        for name, split in (("zeroshot_seen", "val"), ("zeroshot_unseen", "heldout"), ("zeroshot_style", "style")):
            images = ShapesDataset(args.zeroshot_num_samples, image_size, split, seed=args.seed + 1,
                                   max_objects=1, target="color_shape")
            zeroshot.append(ZeroShotSet(name, images, images.classnames, images.class_prompts()))
        negatives = hard_negative_scenes(ShapesDataset(4 * args.zeroshot_num_samples, image_size, "val",
                                                       seed=args.seed + 2), args.zeroshot_num_samples)
    else:   # fashion-mnist
        train = FashionMNIST("train", seed=args.seed)
        val = FirstN(FashionMNIST("test", seed=args.seed), args.val_num_samples)
        test = FirstN(FashionMNIST("test", target="label"), 2000)   # 200 per class
        zeroshot.append(ZeroShotSet("zeroshot_fashion_mnist", test, test.classnames, test.class_prompts()))
    if args.train_num_samples is not None and not isinstance(train, ShapesDataset):
        train = FirstN(train, args.train_num_samples)
    if args.zeroshot_data:
        classes = ImageClassFolder(args.zeroshot_data, target="label")
        zeroshot.append(ZeroShotSet("zeroshot_" + os.path.basename(os.path.normpath(args.zeroshot_data)),
                                    classes, classes.classnames, classes.class_prompts()))

    if tokenizer is None and args.tokenizer:
        tokenizer = Tokenizer(args.tokenizer, context_length=context_length)
    if tokenizer is None:
        tokenizer = train_bpe(captions_of(train), args.vocab_size, context_length=context_length, exact=False)
    shapes = isinstance(train, ShapesDataset)
    return RunData(train, val, zeroshot, negatives, tokenizer, class_of_caption(train, tokenizer),
                   caption_meaning if shapes else None, caption_hard_negatives if shapes else None)


def hard_negative_scenes(dataset, count):
    """(image, caption, negatives) for the first `count` two-object scenes of `dataset`."""
    found = []
    for i in range(len(dataset)):
        scene = dataset.scene(i)
        if len(scene.objects) == 2:
            image, text = dataset[i]
            found.append((image, text, hard_negatives(scene)))
            if len(found) == count:
                break
    return found


def transform(args, image_size, is_train):
    """image_transform with --image-mean and --image-std (CLIP's statistics unless given)."""
    statistics = {key: tuple(getattr(args, f"image_{key}")) for key in ("mean", "std")
                  if getattr(args, f"image_{key}", None) is not None}
    return image_transform(image_size, is_train=is_train, **statistics)


def train_loader(data, args, image_size, shuffle=True, rank=0, world_size=1):
    """Batches of --batch-size x --accum-freq; in a data-parallel run, rank `rank`'s shard."""
    return Loader(data.train, args.batch_size * args.accum_freq, transform(args, image_size, is_train=True),
                  workers=args.workers, seed=args.seed, shuffle=shuffle, drop_last=True, rank=rank,
                  world_size=world_size, tokenize=data.tokenizer, skip_bad_samples=args.skip_bad_samples)


def eval_loader(dataset, args, image_size, tokenize=None):
    return Loader(dataset, 256, transform(args, image_size, is_train=False), workers=args.workers,
                  shuffle=False, tokenize=tokenize, skip_bad_samples=args.skip_bad_samples)
