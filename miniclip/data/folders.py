"""Two folder layouts: image-caption pairs, and a class tree for zero-shot evaluation.

What:
- ImageTextFolder(root): every image under root (subfolders too) with a caption file of the same
  name, photos/0001.jpg + photos/0001.txt (the layout img2dataset writes with --output_format
  files). dataset[i] = (PIL image, caption).
- ImageClassFolder(root): one subfolder per class (torchvision's ImageFolder layout),
  root/golden_retriever/*.jpg; class names come from the folder names with "_" read as a space.
  dataset[i] = (PIL image, class index), or with target="caption" a caption made from a template,
  e.g. "a photo of a golden retriever." `class_prompts()` gives, per class, the prompts of a
  zero-shot classifier (every template filled with the class name).
Why: the two simplest ways people keep their own data, with no CSV to write.
How: files are listed once, sorted (the same order on every machine); images and captions are read
when a sample is asked for, and a bad one raises BadSampleError naming its file. A folder with no
images (or no class folders) is a UserError; a missing one a FileNotFoundError.
Checked by tests/data/test_folders.py.
"""
import os

import numpy as np

from miniclip.data.files import IMAGE_EXTENSIONS, open_image, read_caption
from miniclip.errors import UserError

# A few of CLIP's 80 ImageNet prompt templates (openai/CLIP notebooks/Prompt_Engineering_for_ImageNet).
DEFAULT_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of the {}.",
                     "a close-up photo of a {}.", "a good photo of a {}.")


def image_files(folder):
    """Paths of the image files under folder, subfolders included, in sorted order."""
    paths = []
    for parent, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))   # walk in sorted order
        paths += [os.path.join(parent, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
    return paths


class ImageTextFolder:
    """dataset[i] = (PIL image, caption) of the i-th image file under root (sorted)."""

    def __init__(self, root):
        self.root = str(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"no such folder: {self.root}")
        self.images = image_files(self.root)
        if not self.images:
            raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {self.root}")

    def __len__(self):
        return len(self.images)

    def describe(self, index):
        return self.images[index]

    def __getitem__(self, index):
        path = self.images[index]
        caption = read_caption(os.path.splitext(path)[0] + ".txt", path)
        return open_image(path, path), caption


class ImageClassFolder:
    """dataset[i] = (PIL image, class index), or with target="caption" (PIL image, caption)."""

    def __init__(self, root, target="label", templates=DEFAULT_TEMPLATES, seed=0):
        if target not in ("label", "caption"):
            raise ValueError(f"target must be 'label' or 'caption', got {target!r}")
        self.root, self.target, self.templates, self.seed = str(root), target, tuple(templates), seed
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"no such folder: {self.root}")
        folders = sorted(d for d in os.listdir(self.root)
                         if os.path.isdir(os.path.join(self.root, d)) and not d.startswith("."))
        if not folders:
            raise UserError(f"{self.root} has no class subfolders (expected root/<class name>/<image files>)")
        self.classnames = [d.replace("_", " ") for d in folders]
        self.samples = []   # (path, class index)
        for label, folder in enumerate(folders):
            paths = image_files(os.path.join(self.root, folder))
            if not paths:
                raise UserError(f"class folder {os.path.join(self.root, folder)} has no image files")
            self.samples += [(path, label) for path in paths]

    def __len__(self):
        return len(self.samples)

    def describe(self, index):
        return self.samples[index][0]

    def __getitem__(self, index):
        path, label = self.samples[index]
        image = open_image(path, path)
        if self.target == "label":
            return image, label
        # The template is a pure function of (seed, index), like every random choice in miniclip.data.
        template = self.templates[np.random.default_rng((self.seed, index)).integers(len(self.templates))]
        return image, template.format(self.classnames[label])

    def class_prompts(self):
        return [[t.format(name) for t in self.templates] for name in self.classnames]
