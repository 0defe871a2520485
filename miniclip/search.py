"""Text-to-image search with a CLIP checkpoint: the images of a folder that best match a sentence.

    python -m miniclip.search --checkpoint model.safetensors --images photos/ "a red circle" \\
        --top-k 8 --out results.png

What: every image under --images (subfolders too) is encoded by the image tower, the query by the
text tower; both are normalised, so their dot product is the cosine similarity, and the images
are ranked by it, best first (the text->image half of retrieval in zeroshot.py). The top k are
printed with their scores and drawn as a contact sheet: a PNG grid of the images, each labelled
with its rank, score and file name.
Why: the quickest way to see what a trained model has learned, beyond one accuracy number.
An unreadable image stops the search, naming it; --skip-bad-samples leaves such images out and
counts them (as in zeroshot.py).
Checked by tests/test_search.py: a planted case whose ranking is known, the sheet's grid size,
bad images skipped, and the errors for bad input.
"""
import argparse
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from miniclip.data.files import open_image
from miniclip.data.folders import image_files
from miniclip.errors import UserError, exit_on_user_error
from miniclip.zeroshot import (add_model_arguments, encode_image_files, encode_texts, load_model_and_tokenizer,
                               report_skipped, resolve_device)

# The contact sheet's layout, in pixels: each cell is a THUMBNAIL x THUMBNAIL image above
# LABEL_HEIGHT pixels of text; cells and the title are separated by PADDING.
THUMBNAIL = 160
LABEL_HEIGHT = 28
TITLE_HEIGHT = 24
PADDING = 8
MAX_COLUMNS = 4


def rank_images(image_features, text_feature, top_k):
    """(indices, scores) of the top_k images by cosine similarity to the text, best first.

    image_features: (N, D) and text_feature: (D,), both normalised. Equal scores keep the
    images' order (a stable sort), so the ranking is reproducible."""
    scores = image_features @ text_feature                               # (N,)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return order, scores[order]


def sheet_size(count):
    """(width, height) of the contact sheet for `count` images."""
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    return (PADDING + columns * (THUMBNAIL + PADDING),
            TITLE_HEIGHT + PADDING + rows * (THUMBNAIL + LABEL_HEIGHT + PADDING))


def contact_sheet(images, scores, names, query):
    """A PIL image: the query as a title, then the images in a grid, row by row, each labelled
    '#rank  score' and its name. Images keep their aspect ratio inside a THUMBNAIL square."""
    width, height = sheet_size(len(images))
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    draw.text((PADDING, PADDING), f"query: {query}", fill="black", font=font)
    columns = min(len(images), MAX_COLUMNS)
    for i, (image, score, name) in enumerate(zip(images, scores, names)):
        row, column = divmod(i, columns)
        left = PADDING + column * (THUMBNAIL + PADDING)
        top = TITLE_HEIGHT + PADDING + row * (THUMBNAIL + LABEL_HEIGHT + PADDING)
        scale = THUMBNAIL / max(image.size)
        thumb_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # Small images (the built-in 32-64 px shapes) are enlarged with NEAREST, which keeps
        # their edges sharp; photos are shrunk with BICUBIC, as the model's own transform does.
        thumb = image.convert("RGB").resize(thumb_size, Image.NEAREST if scale > 1 else Image.BICUBIC)
        sheet.paste(thumb, (left + (THUMBNAIL - thumb.width) // 2, top + (THUMBNAIL - thumb.height) // 2))
        label_top = top + THUMBNAIL + 2
        draw.text((left, label_top), f"#{i + 1}  {score:.3f}", fill="black", font=font)
        short = name if len(name) <= 26 else "..." + name[-23:]
        draw.text((left, label_top + 12), short, fill="gray", font=font)
    return sheet


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m miniclip.search",
        description="Rank the images of a folder by their similarity to a text with a CLIP "
                    "checkpoint; print the top k and write them as a contact-sheet PNG.")
    add_model_arguments(p)
    p.add_argument("--images", required=True, metavar="DIR", help="the folder of images (subfolders too)")
    p.add_argument("query", help="the text to search for, e.g. 'a red circle'")
    p.add_argument("--top-k", type=int, default=8, help="how many images to show (default: 8)")
    p.add_argument("--out", default="search_results.png",
                   help="the contact sheet's path (default: search_results.png)")
    return p


def run(args):
    if not args.query.strip():
        raise UserError("the query is empty: give a text to search for, e.g. 'a red circle'")
    if args.top_k < 1 or args.batch_size < 1 or args.workers < 0:
        raise UserError(f"need --top-k >= 1, --batch-size >= 1 and --workers >= 0; got "
                               f"{args.top_k}, {args.batch_size} and {args.workers}")
    if not os.path.isdir(args.images):
        raise UserError(f"--images {args.images}: no such folder")
    paths = image_files(args.images)
    if not paths:
        raise UserError(f"--images {args.images} holds no image files (subfolders included)")
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out {args.out}: the contact sheet is a PNG, name it *.png")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UserError(f"--out {args.out}: its folder does not exist")
    device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args, device)
    image_features, kept, skipped = encode_image_files(model, paths, args.batch_size, device, args.workers,
                                                       args.skip_bad_samples)                # (N, D)
    paths = [paths[i] for i in kept]
    text_feature = encode_texts(model, tokenizer, [args.query], device=device)[0]              # (D,)
    order, scores = rank_images(image_features, text_feature, args.top_k)

    print(f"query: {args.query!r}: the top {len(order)} of {len(paths)} images under {args.images}")
    print("rank  score   image")
    for rank, (i, score) in enumerate(zip(order, scores), start=1):
        print(f"{rank:>4}  {score:6.3f}  {paths[i]}")
    names = [os.path.relpath(paths[i], args.images) for i in order]
    sheet = contact_sheet([open_image(paths[i], paths[i]) for i in order], scores, names, args.query)
    sheet.save(args.out)
    print(f"contact sheet: {args.out} ({sheet.width} x {sheet.height})")
    report_skipped(skipped)


def main(argv=None):
    parser = build_parser()
    exit_on_user_error(parser.prog, run, parser.parse_args(argv))


if __name__ == "__main__":
    main()
