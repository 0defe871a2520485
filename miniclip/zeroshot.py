"""Evaluating a CLIP without training a classifier: zero-shot classification and retrieval.

Zero-shot classification (Radford et al. 2021, section 3.1.2): write each class as sentences
("a photo of a {red circle}.", ...), embed them with the text tower, average the normalised
embeddings over the templates and normalise again: that is the class's weight vector w_c. An
image is assigned the class whose w_c is most similar to its normalised image embedding:

    prediction = argmax_c  image_features @ W.T          W: (C, embed_dim)

Retrieval (OpenCLIP's get_clip_metrics): for N matching (image, text) pairs, rank all N texts
for each image by similarity (and all images for each text) and report where the true partner
lands: R@k (fraction ranked in the top k), the mean and the median rank (1 = first).

Ties. zeroshot_accuracy sorts stably, so among equal scores the lower class index wins: a model
whose features have collapsed to one vector scores the share of class 0, about chance.
retrieval_metrics ranks the true partner after the candidates that score strictly higher only,
so a duplicate caption (the same text twice in a validation set) does not count as a miss.

The command line (main() at the bottom):

    python -m miniclip.zeroshot --checkpoint logs/run/checkpoints/epoch_5.safetensors \\
        --class-dir shapes_test/                    # root/<class name>/<images>: top-1, top-5
    python -m miniclip.zeroshot --checkpoint model.safetensors \\
        --classes "red circle,blue square" --images photos/
        # photos/ with subfolders named as classes: accuracy; a flat folder: per-image predictions

An image that cannot be read stops the command with a message naming it; --skip-bad-samples (as
the trainer's) leaves such images out instead, counts them and names the first ones.

Checked by tests/test_zeroshot.py: the metrics on hand-computed cases (ties, permuted pairs), the
template ensembling with a stub text tower whose answer is known, and the command line end to end
on a tiny model, with bad images skipped or refused, and its errors (exit code 2, or a bug's traceback).
"""
import argparse
import os

import numpy as np

from miniclip.backend import has_gpu, to_device, to_numpy
from miniclip.data.files import IMAGE_EXTENSIONS, open_image
from miniclip.data.folders import DEFAULT_TEMPLATES, ImageClassFolder, image_files
from miniclip.data.loader import Loader
from miniclip.data.transforms import image_transform
from miniclip.errors import UserError, exit_on_user_error
from miniclip.models import create_model, load_model
from miniclip.models.config import MAX_PARAMETERS
from miniclip.tensor import Tensor, no_grad
from miniclip.tokenizer import Tokenizer


def _normalize_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@no_grad()
def encode_texts(model, tokenizer, texts, batch_size=256, device="cpu"):
    """Normalised text embeddings (N, embed_dim) as a NumPy array."""
    out = [to_numpy(model.encode_text(to_device(tokenizer(texts[i:i + batch_size]), device), normalize=True).data)
           for i in range(0, len(texts), batch_size)]
    return np.concatenate(out)


@no_grad()
def encode_images(model, images, batch_size=256, device="cpu"):
    """Normalised image embeddings (N, embed_dim) for an array or an iterable of image batches."""
    batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size)) \
        if isinstance(images, np.ndarray) else images
    out = [to_numpy(model.encode_image(Tensor(to_device(batch, device)), normalize=True).data)
           for batch in batches]
    return np.concatenate(out)


def zeroshot_classifier(model, tokenizer, classnames, templates, device="cpu"):
    """W (C, embed_dim): per class, the normalised mean of its normalised template embeddings."""
    weights = []
    for name in classnames:
        embeddings = encode_texts(model, tokenizer, [t.format(name) for t in templates], device=device)
        weights.append(embeddings.mean(axis=0))
    return _normalize_rows(np.stack(weights))


def zeroshot_accuracy(image_features, labels, classifier, topk=(1,)):
    """Top-k accuracy of argmax_c image_features @ classifier.T, for each k in topk."""
    scores = image_features @ classifier.T                              # (N, C)
    ranking = np.argsort(-scores, axis=1, kind="stable")               # (N, C) best class first
    labels = np.asarray(labels)
    return {f"top{k}": float((ranking[:, :k] == labels[:, None]).any(axis=1).mean()) for k in topk}


def retrieval_metrics(image_features, text_features):
    """R@1/5/10, mean and median rank, image->text and text->image, for matching rows."""
    similarity = image_features @ text_features.T                       # (N, N), pairs on the diagonal
    metrics = {}
    for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        # rank of the true partner: 1 + the candidates scoring higher + half of those scoring the
        # same (the expected rank when ties are broken at random), so a collapsed model whose
        # features are all equal ranks at chance, not first
        true_scores = np.diag(scores)[:, None]
        ties = (scores == true_scores).sum(axis=1) - 1
        ranks = 1 + (scores > true_scores).sum(axis=1) + ties / 2
        metrics[f"{direction}_mean_rank"] = float(ranks.mean())
        metrics[f"{direction}_median_rank"] = float(np.floor(np.median(ranks)))
        for k in (1, 5, 10):
            metrics[f"{direction}_R@{k}"] = float((ranks <= k).mean())
    return metrics


def caption_vs_hard_negatives(image_features, caption_features, negative_features):
    """Fraction of images whose true caption scores above every one of its hard negatives.

    caption_features: (N, D); negative_features: (N, K, D), K negatives per image (e.g. the same
    caption with the colours swapped or the relation reversed).
    """
    positive = (image_features * caption_features).sum(-1)                            # (N,)
    negative = np.einsum("nd,nkd->nk", image_features, negative_features)             # (N, K)
    return float((positive[:, None] > negative).all(axis=1).mean())


# ---------------------------------------------------------------------------------------------
# The command-line tools (this one and miniclip/search.py): load a checkpoint, read image files.
# A mistake in the flags or the files they name is a UserError (miniclip/errors.py): main() prints
# it in one line and exits with code 2; anything else is a bug and keeps its traceback.

def resolve_device(name):
    """'auto' -> 'cuda' when CuPy sees a GPU, else 'cpu'."""
    if name == "auto":
        return "cuda" if has_gpu() else "cpu"
    if name == "cuda" and not has_gpu():
        raise UserError("--device cuda: CuPy is not installed or sees no GPU")
    return name


def load_model_and_tokenizer(args, device="cpu"):
    """(model in eval mode on `device`, tokenizer) as the flags say: --checkpoint FILE (a model
    file miniclip.load_model reads), or OpenCLIP's pair --model NAME --pretrained TAG_OR_FILE.

    The tokenizer is --tokenizer's merges file, else the one saved in the checkpoint, else
    OpenAI's (the vocabulary of every CLIP that OpenAI and OpenCLIP trained, shipped with miniclip)."""
    if (args.checkpoint is None) == (args.pretrained is None):
        raise UserError("give --checkpoint FILE, or --model NAME --pretrained TAG_OR_FILE as in OpenCLIP "
                        "(e.g. --model ViT-B-32 --pretrained openai)")
    if args.checkpoint is not None:
        if args.model is not None:
            raise UserError("--model goes with --pretrained: a --checkpoint file carries its own config")
        if not os.path.isfile(args.checkpoint):
            raise UserError(f"--checkpoint {args.checkpoint}: no such file")
        model, tokenizer = load_model(args.checkpoint, args.max_parameters)
    else:
        if args.model is None:
            raise UserError(f"--pretrained {args.pretrained} needs --model, the architecture (e.g. --model ViT-B-32)")
        model = create_model(args.model, pretrained=args.pretrained, max_parameters=args.max_parameters)
        tokenizer = None
    if args.tokenizer is not None:
        if not os.path.isfile(args.tokenizer):
            raise UserError(f"--tokenizer {args.tokenizer}: no such file")
        try:
            tokenizer = Tokenizer(args.tokenizer, context_length=model.context_length)
        except ValueError as e:   # the merges file's reader refuses a file that is not one
            raise UserError(f"--tokenizer {args.tokenizer}: {e}") from None
    if tokenizer is None:
        tokenizer = Tokenizer(context_length=model.context_length)
    if tokenizer.vocab_size > model.vocab_size:
        raise UserError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {model.vocab_size}: "
                        f"they do not belong together (pass the model's merges file with --tokenizer)")
    model.eval()
    return model.to(device), tokenizer


class ImageList:
    """dataset[i] = (PIL image of paths[i], labels[i]): image files in a given order, for Loader."""

    def __init__(self, paths, labels=None):
        self.paths = list(paths)
        self.labels = list(range(len(self.paths))) if labels is None else list(labels)

    def __len__(self):
        return len(self.paths)

    def describe(self, index):
        return self.paths[index]

    def __getitem__(self, index):
        return open_image(self.paths[index], self.paths[index]), self.labels[index]


def encode_image_files(model, paths, batch_size=64, device="cpu", workers=2, skip_bad_samples=False):
    """(features, kept, skipped): normalised embeddings (N', embed_dim) of image files of any size
    and mode (CLIP's eval transform resizes the shorter side, centre-crops to the model's input and
    converts to RGB); kept, the indices into `paths` of the N' images encoded, in order; skipped, a
    message per image that could not be read. Without skip_bad_samples the first bad image raises
    BadSampleError, so kept is every index and skipped is empty."""
    transform = image_transform(model.visual.image_size, is_train=False, mean=model.visual.image_mean,
                                std=model.visual.image_std)   # the statistics it was trained with
    loader = Loader(ImageList(paths), batch_size, transform,
                    workers=workers, shuffle=False, skip_bad_samples=skip_bad_samples)
    features, kept = [], []
    for images, indices in loader.epoch(0):   # ImageList's labels are the indices themselves
        features.append(encode_images(model, images, batch_size=batch_size, device=device))
        kept += indices
    return np.concatenate(features), kept, loader.skipped


def report_skipped(skipped):
    """The summary line of --skip-bad-samples, after a command's results."""
    if skipped:
        print(f"skipped {len(skipped)} unreadable images (--skip-bad-samples); the first: {skipped[0]}")


def add_model_arguments(parser):
    """The flags both tools share: which model, which tokenizer, where to run."""
    parser.add_argument("--checkpoint",
                        help="a model file written by miniclip (python -m miniclip.train, save_model), or "
                             "OpenCLIP's open_clip_model.safetensors with open_clip_config.json beside it")
    parser.add_argument("--model", help="with --pretrained, as in OpenCLIP: a built-in config (ViT-B-32, RN50, ...) "
                                        "or a model-config JSON")
    parser.add_argument("--pretrained", metavar="TAG_OR_FILE",
                        help="with --model: an OpenCLIP tag (openai, laion2b_s34b_b79k, ...: downloaded "
                             "from the Hugging Face hub, needs miniclip[hub]) or a .safetensors file")
    parser.add_argument("--tokenizer", metavar="MERGES",
                        help="a BPE merges file, when the checkpoint holds none (default: the checkpoint's, "
                             "else OpenAI's vocabulary)")
    parser.add_argument("--max-parameters", type=int, default=MAX_PARAMETERS,
                        help=f"refuse a model config with more parameters, before building it "
                             f"(default: {MAX_PARAMETERS:,})")
    parser.add_argument("--batch-size", type=int, default=64, help="images encoded per batch (default: 64)")
    parser.add_argument("--workers", type=int, default=2, help="threads decoding images (default: 2)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the GPU when CuPy sees one, else the CPU")
    parser.add_argument("--skip-bad-samples", action="store_true",
                        help="leave out the images that cannot be read (missing, truncated, not an image, "
                             "too many pixels), count them and name the first ones; without it the first "
                             "one stops the command. More than half of them bad is still an error")


# ---------------------------------------------------------------------------------------------
# python -m miniclip.zeroshot

def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m miniclip.zeroshot",
        description="Zero-shot classification with a CLIP checkpoint: each class is the ensemble of "
                    "its prompt templates. Labelled images (a class tree) give top-1 and top-k "
                    "accuracy; a flat folder of images gives per-image predictions.")
    add_model_arguments(p)
    classes = p.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", help="comma-separated class names: 'red circle,blue square'")
    classes.add_argument("--class-dir", metavar="DIR",
                         help="an ImageFolder-style tree DIR/<class name>/<images>; the classes are the "
                              "folder names ('_' read as a space), the images are its files")
    p.add_argument("--images", metavar="DIR",
                   help="with --classes: a folder whose subfolders are named as classes (labelled), "
                        "or a flat folder of images (predictions only)")
    p.add_argument("--templates", nargs="+", default=list(DEFAULT_TEMPLATES), metavar="TEMPLATE",
                   help="prompt templates, '{}' standing for the class name (default: five of CLIP's "
                        "ImageNet templates, 'a photo of a {}.' ...)")
    p.add_argument("--top-k", type=int, default=5,
                   help="k of the top-k accuracy, and the classes listed per image (default: 5)")
    return p


def parse_classes(text):
    """'red circle, blue square' -> ['red circle', 'blue square'], refusing duplicates."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"--classes names {', '.join(duplicates)} more than once")
    return names


def images_and_labels(args):
    """(class names, image paths, labels or None) from --class-dir, or --classes with --images."""
    if args.class_dir is not None:
        if not os.path.isdir(args.class_dir):
            raise UserError(f"--class-dir {args.class_dir}: no such folder")
        if args.images is not None:
            raise UserError("--images goes with --classes; with --class-dir the images are "
                                   "the files of its class folders")
        folder = ImageClassFolder(args.class_dir)
        return folder.classnames, [path for path, _ in folder.samples], [label for _, label in folder.samples]

    classnames = parse_classes(args.classes)
    if args.images is None:
        raise UserError("--classes needs --images DIR: the images to classify")
    if not os.path.isdir(args.images):
        raise UserError(f"--images {args.images}: no such folder")
    subfolders = sorted(d for d in os.listdir(args.images)
                        if os.path.isdir(os.path.join(args.images, d)) and not d.startswith("."))
    if not subfolders:                                   # a flat folder: nothing to score against
        paths = image_files(args.images)
        if not paths:
            raise UserError(f"--images {args.images} holds no image files")
        return classnames, paths, None

    paths, labels = [], []
    for folder in subfolders:
        name = folder.replace("_", " ")
        if name not in classnames:
            raise UserError(f"{os.path.join(args.images, folder)}: folder {folder!r} is not one of "
                                   f"the --classes ({', '.join(classnames)}); name each subfolder after "
                                   f"a class, '_' for a space")
        folder_paths = image_files(os.path.join(args.images, folder))
        paths += folder_paths
        labels += [classnames.index(name)] * len(folder_paths)
    loose = [n for n in sorted(os.listdir(args.images))
             if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(args.images, n))]
    if loose:
        raise UserError(f"--images {args.images} mixes class subfolders with loose images "
                               f"({loose[0]}, ...): put every image in its class's folder")
    if not paths:
        raise UserError(f"the class folders under {args.images} hold no image files")
    return classnames, paths, labels


def check_arguments(args, classnames):
    if len(classnames) < 2:
        raise UserError(f"zero-shot classification needs at least 2 classes, got {classnames}")
    for template in args.templates:
        if "{}" not in template:
            raise UserError(f"template {template!r} has no '{{}}' for the class name")
    if args.top_k < 1 or args.batch_size < 1 or args.workers < 0:
        raise UserError(f"need --top-k >= 1, --batch-size >= 1 and --workers >= 0; got "
                               f"{args.top_k}, {args.batch_size} and {args.workers}")


def print_accuracy(classnames, features, labels, classifier, top_k):
    """Accuracy per class (top-1) and overall (top-1 and top-k), with chance for comparison."""
    labels = np.asarray(labels)
    predictions = np.argmax(features @ classifier.T, axis=1)            # (N,)
    width = max(len("class"), *map(len, classnames))
    print(f"{'class':<{width}}  images  top-1")
    for c, name in enumerate(classnames):
        mine = labels == c
        if mine.any():
            print(f"{name:<{width}}  {mine.sum():>6}  {100 * (predictions[mine] == c).mean():5.1f}%")
    accuracy = zeroshot_accuracy(features, labels, classifier, topk=(1, top_k))
    n = len(labels)
    print(f"top-1 accuracy: {100 * accuracy['top1']:.2f}%  ({round(accuracy['top1'] * n)}/{n}; "
          f"chance {100 / len(classnames):.2f}%)")
    if top_k > 1:
        note = f"; all {len(classnames)} classes fit in the top {top_k}" if top_k >= len(classnames) else ""
        print(f"top-{top_k} accuracy: {100 * accuracy[f'top{top_k}']:.2f}%  "
              f"({round(accuracy[f'top{top_k}'] * n)}/{n}{note})")


def print_predictions(classnames, paths, features, classifier, logit_scale, top_k):
    """Per image its top-k classes with CLIP's probabilities: softmax(exp(logit_scale) * cosine)."""
    logits = logit_scale * (features @ classifier.T)                     # (N, C)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for path, row in zip(paths, probs):
        best = np.argsort(-row, kind="stable")[:top_k]
        print(f"{path}\t" + "  ".join(f"{classnames[c]} {row[c]:.3f}" for c in best))


def run(args):
    classnames, paths, labels = images_and_labels(args)
    check_arguments(args, classnames)
    device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args, device)
    classifier = zeroshot_classifier(model, tokenizer, classnames, args.templates, device=device)
    features, kept, skipped = encode_image_files(model, paths, args.batch_size, device, args.workers,
                                                 args.skip_bad_samples)
    print(f"zero-shot: {len(kept)} images, {len(classnames)} classes, {len(args.templates)} prompt "
          f"templates per class ({args.checkpoint or f'{args.model} {args.pretrained}'})")
    if labels is None:
        logit_scale = float(np.exp(to_numpy(model.logit_scale.data)))
        print_predictions(classnames, [paths[i] for i in kept], features, classifier, logit_scale, args.top_k)
    else:
        print_accuracy(classnames, features, [labels[i] for i in kept], classifier, args.top_k)
    report_skipped(skipped)


def main(argv=None):
    parser = build_parser()
    exit_on_user_error(parser.prog, run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
