"""miniclip.data: everything the trainer needs before the model — image-text pairs, as batches.

    shapes.py         the built-in dataset: generated coloured shapes with captions, held-out
                      colour-shape pairs and hard negatives (no download)
    csv_dataset.py    a CSV/TSV file in OpenCLIP's format (filepath, title)
    folders.py        name.jpg + name.txt pairs; a class-per-folder tree for zero-shot evaluation
    fashion_mnist.py  Fashion-MNIST from Debian's dataset-fashion-mnist package
    transforms.py     CLIP's preprocessing (resize, crop, normalise) -> float32 (3, S, S)
    loader.py         batches prepared by background threads, deterministic for a seed

A dataset is anything with len() and dataset[i] -> (image, caption or class index), where the
image is a PIL image or a uint8 NumPy array; describe(i) names a sample in error messages.

    from miniclip.data import ShapesDataset, Loader, image_transform
    loader = Loader(ShapesDataset(100_000, image_size=64), batch_size=256,
                    transform=image_transform(64, is_train=True), workers=4, seed=0)
    for images, captions in loader.epoch(0):    # images: float32 (256, 3, 64, 64)
        ...
"""
from miniclip.data.csv_dataset import CsvDataset
from miniclip.data.fashion_mnist import FashionMNIST
from miniclip.data.files import BadSampleError
from miniclip.data.folders import ImageClassFolder, ImageTextFolder
from miniclip.data.loader import Loader
from miniclip.data.shapes import ShapesDataset, caption, hard_negatives, make_scene, render, zeroshot_classes
from miniclip.data.transforms import CLIP_MEAN, CLIP_STD, image_transform
