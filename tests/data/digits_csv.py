"""scikit-learn's load_digits (1,797 scans of handwritten digits, 8x8, 10 classes) as an OpenCLIP
CSV with class-word captions, and its held-out images as a class-folder tree for zero-shot.

    python -m tests.data.digits_csv OUT      # OUT/train.tsv, OUT/images/, OUT/zeroshot/digit_*/

The first n_train images (shuffled with a fixed seed) are the training pairs, upscaled to 32x32
PNGs; each caption is its class word in one of 4 templates ("a photo of the digit seven."), and a
`label` column holds the class index (for --csv-class-key). The other images go to
OUT/zeroshot/digit_<word>/, which --zeroshot-data classifies among the 10 classes.
"""
import os
import sys

import numpy as np
from PIL import Image

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a photo of the digit {}.", "a scan of the digit {}.", "a drawing of the digit {}.",
             "a small picture of the digit {}.")


def digit_png(path, image):
    """An 8x8 scan (values 0-16) as a 32x32 8-bit grayscale PNG, smoothly upscaled."""
    pixels = (np.asarray(image) * (255 / 16)).round().astype(np.uint8)
    Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).save(path)


def write_digits_csv(folder, n_train=1400, seed=0):
    """Write the CSV, its images and the zero-shot tree under folder; return the CSV's path."""
    from sklearn.datasets import load_digits   # ships its data in the wheel: no download
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    rng = np.random.default_rng(seed + 1)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    lines = ["filepath\ttitle\tlabel"]
    for i in order[:n_train]:
        label = int(digits.target[i])
        digit_png(os.path.join(folder, "images", f"{i}.png"), digits.images[i])
        caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(WORDS[label])
        lines.append(f"images/{i}.png\t{caption}\t{label}")
    for i in order[n_train:]:
        class_folder = os.path.join(folder, "zeroshot", f"digit_{WORDS[int(digits.target[i])]}")
        os.makedirs(class_folder, exist_ok=True)
        digit_png(os.path.join(class_folder, f"{i}.png"), digits.images[i])
    path = os.path.join(folder, "train.tsv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(write_digits_csv(sys.argv[1]))
