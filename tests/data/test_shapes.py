"""The built-in shapes dataset: deterministic, captions true to the pixels, splits, hard negatives.

The caption checks read the caption's words without looking at the scene, then find what they
name in the pixels, under every style the generator draws: the named colour is the nearest palette
colour of the pixels the object covers, the covered pixels against an independent point-in-polygon
rasterisation (matplotlib.path) of the polygon turned and stretched as the scene says (filled: the
same pixels; outlined: its boundary, not its inside), the named relation between the centroids of
the two colours. What an object covers is read from the difference with the same scene drawn
without its objects; the geometry checks use the scene without blur, noise and blocks, which are
checked on their own (small, and only changing pixels near where they would be).
"""
import hashlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.path import Path

from miniclip.data import shapes
from dataclasses import replace

from miniclip.data.shapes import (BACKGROUNDS, COLORS, HELD_OUT, HELD_OUT_STYLE, RELATIONS, SEEN_PAIRS,
                                  SHAPE_WORDS, SIZE_WORDS, SIZES, ShapesDataset, caption, caption_meaning,
                                  hard_negatives, make_scene, render)

ROOT = pathlib.Path(__file__).resolve().parents[2]
PALETTE = np.array(list(COLORS.values()), np.float64)   # (6, 3)
COLOR_NAMES = list(COLORS)


def parse(text):
    """[(size or None, color, shape), ...] and the relation, read from the caption's words alone."""
    text = text.rstrip(".")
    relation, halves = None, [text]
    for name, phrases in RELATIONS.items():
        for phrase in sorted(phrases, key=len, reverse=True):   # "to the left of" before "left of"
            if f" {phrase} a " in text:
                assert relation is None, f"two relations in {text!r}"
                relation = name
                halves = text.split(f" {phrase} a ")
                break
    objects = []
    for half in halves:
        words = half.split()
        colors = [w for w in words if w in COLORS]
        sizes = [size for size, names in SIZE_WORDS.items() for w in words if w in names]
        found = [shape for shape, names in SHAPE_WORDS.items() for n in names if f" {n}" in f" {half}"]
        assert len(colors) == 1 and len(found) == 1 and len(sizes) <= 1, f"cannot parse {half!r} of {text!r}"
        objects.append((sizes[0] if sizes else None, colors[0], found[0]))
    return objects, relation


def nearest_color(pixels):
    """The palette name nearest each pixel, and its distance."""
    distance = np.linalg.norm(pixels[..., None, :].astype(np.float64) - PALETTE, axis=-1)   # (..., 6)
    return np.array(COLOR_NAMES)[distance.argmin(-1)], distance.min(-1)


def polygon_mask(shape, x, y, r, size, angle=0.0, aspect=1.0):
    """Pixels whose centre is inside the shape, by matplotlib's point-in-polygon test; the polygon
    is stretched to aspect x its width and 1/aspect x its height, then turned by `angle`."""
    t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    R = 0.95 * r   # the triangles' circumradius
    up = [(0, -R), (0.866 * R, 0.5 * R), (-0.866 * R, 0.5 * R)]
    a, b, w = 0.9 * r, 0.3 * r, 0.7 * r
    polygons = {
        "circle": [np.stack([0.9 * r * np.cos(t), 0.9 * r * np.sin(t)], 1)],
        "square": [[(-w, -w), (w, -w), (w, w), (-w, w)]],
        "triangle": [up],
        "diamond": [[(0, -0.95 * r), (0.6 * r, 0), (0, 0.95 * r), (-0.6 * r, 0)]],
        "cross": [[(-a, -b), (a, -b), (a, b), (-a, b)], [(-b, -a), (b, -a), (b, a), (-b, a)]],
        "star": [up, [(px, -py) for px, py in up]],
    }[shape]
    stretch = np.diag([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1).reshape(-1, 2)
    inside = np.zeros(len(centres), bool)
    for polygon in polygons:
        corners = np.asarray(polygon, np.float64) @ stretch.T @ turn.T + (x, y)
        inside |= Path(corners).contains_points(centres)
    return inside.reshape(size, size)


def blended_color(pixel, background):
    """The palette name whose blend with the background, bg + a (colour - bg) for the best a in
    [0, 1], comes nearest the pixel (a blur or a thin outline mixes the two)."""
    directions = PALETTE - background                                                    # (6, 3)
    a = np.clip(directions @ (pixel - background) / (directions ** 2).sum(-1), 0, 1)     # (6,)
    residual = np.linalg.norm(background + a[:, None] * directions - pixel, axis=-1)
    return COLOR_NAMES[residual.argmin()]


def erode(mask, steps):
    """Pixels of mask whose 4-neighbours, `steps` times over, are all in mask."""
    for _ in range(steps):
        kept = mask.copy()
        kept[1:] &= mask[:-1]
        kept[:-1] &= mask[1:]
        kept[:, 1:] &= mask[:, :-1]
        kept[:, :-1] &= mask[:, 1:]
        mask = kept
    return mask


def without_effects(scene):
    """The same scene without blur, noise and blocks (the geometry checks read its pixels)."""
    return replace(scene, style=replace(scene.style, blur=0.0, noise=0.0, blocks=0.0))


def check_geometry(scene, obj, size, text):
    """The object covers the pixels its polygon says: all of them when filled, its edge when outlined."""
    clean = without_effects(scene)
    image = render(clean, size).astype(np.float64)
    background = render(replace(clean, objects=()), size).astype(np.float64)
    rgb = np.array(obj.rgb, np.float64)
    coverage = ((image - background) * (rgb - background)).sum(-1) / ((rgb - background) ** 2).sum(-1)
    disc = polygon_mask("circle", obj.x, obj.y, (obj.radius * 1.1 + 1.5) / 0.9, size)
    drawn = (coverage > 0.5) & disc   # 0 background .. 1 object
    expected = polygon_mask(obj.shape, obj.x, obj.y, obj.radius, size, obj.angle, obj.aspect)
    if not scene.style.outline:
        iou = (drawn & expected).sum() / (drawn | expected).sum()
        assert iou > 0.85, f"{text!r}: the filled {obj.shape} differs from its polygon (IoU {iou:.2f})"
        return
    outside = (drawn & ~(~erode(~expected, 1))).sum() / drawn.sum()
    edge = expected & ~erode(expected, 1)
    edge_drawn = (drawn & edge).sum() / edge.sum()
    inside = erode(expected, int(np.ceil(2 * scene.style.stroke)) + 1)   # 4-neighbour steps: L1 distance
    assert outside < 0.05 and edge_drawn > 0.7, (f"{text!r}: the outlined {obj.shape} is not on its "
                                                 f"polygon's edge ({outside:.2f} outside, {edge_drawn:.2f} "
                                                 f"of the edge drawn)")
    assert not inside.any() or (drawn & inside).sum() / inside.sum() < 0.2, f"{text!r}: the outline is filled"


def sample_hash(seed, split, index, size):
    scene = make_scene(seed, split, index, size)
    return hashlib.sha256(render(scene, size).tobytes() + caption(scene).encode()).hexdigest()


def test_same_seed_and_index_same_sample_in_another_process():
    here = [sample_hash(3, "train", i, 32) for i in (0, 1, 999_999)]
    code = ("from tests.data.test_shapes import sample_hash;"
            "print(' '.join(sample_hash(3, 'train', i, 32) for i in (0, 1, 999_999)))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=ROOT).stdout.split()
    assert here == there
    assert len(set(here)) == 3, "different indices gave the same sample"
    assert sample_hash(4, "train", 0, 32) != here[0], "the seed does not change the sample"
    assert sample_hash(3, "val", 0, 32) != here[0], "the split does not change the sample"


def test_dataset_item_is_uint8_image_and_caption():
    dataset = ShapesDataset(10, image_size=32, seed=1)
    image, text = dataset[4]
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    np.testing.assert_array_equal(image, dataset[4][0])
    assert text == caption(dataset.scene(4))
    with pytest.raises(IndexError):
        dataset[10]


@pytest.mark.parametrize("size", [64, 32])
@pytest.mark.parametrize("split", ["train", "style"])
def test_captions_match_the_pixels(size, split):
    for index in range(100):
        scene = make_scene(0, split, index, size)
        image = render(scene, size)
        text = caption(scene)
        named, relation = parse(text)
        assert len(named) == len(scene.objects), text
        assert relation == scene.relation, text
        clean = render(without_effects(scene), size)
        names, distance = nearest_color(clean)
        centroids = []
        for (size_word, color, shape), obj in zip(named, scene.objects):
            assert (color, shape) == (obj.color, obj.shape), text
            assert size_word in (None, obj.size), text
            low, high = SIZES[obj.size]
            assert low * size <= obj.radius <= high * size, (text, obj.radius)
            check_geometry(scene, obj, size, text)
            # The named colour is the nearest palette colour of what the object covers, and with
            # the blur, noise and blocks still the colour that, blended with the background, gives
            # those pixels.
            covered = polygon_mask(obj.shape, obj.x, obj.y, obj.radius, size, obj.angle, obj.aspect)
            covered &= (names == color) & (distance < 40)
            assert covered.sum() >= 3, f"{text!r}: the {color} {shape} is not {color} in the pixels"
            background = render(replace(scene, objects=()), size)[covered].mean(0)
            assert blended_color(image[covered].mean(0), background) == color, (text, image[covered].mean(0))
            ys, xs = np.nonzero((names == color) & (distance < 40))
            centroids.append((xs.mean() + 0.5, ys.mean() + 0.5))
        if relation is not None:
            (x0, y0), (x1, y1) = centroids
            where = {"left": x0 < x1, "right": x0 > x1, "above": y0 < y1, "below": y0 > y1}
            assert where[relation], f"{text!r} but the centroids are {centroids}"


def test_blur_noise_and_blocks_change_pixels_a_little():
    changed = 0
    for index in range(100):
        scene = make_scene(0, "train", index, 32)
        style = scene.style
        difference = np.abs(render(scene, 32).astype(int) - render(without_effects(scene), 32))
        if style.blur or style.noise or style.blocks:
            changed += 1
            assert difference.any(), f"sample {index}: {style} left the pixels as they were"
            assert difference.mean() < 3 * (style.noise + style.blocks) + 12, f"sample {index}: {style}"
        else:
            assert not difference.any()
    assert 20 < changed < 90


def test_styles_vary_and_the_held_out_style_is_only_in_its_split():
    styles = [make_scene(0, split, i, 32).style for split in ("train", "val", "heldout") for i in range(400)]
    assert {s.background for s in styles} == set(BACKGROUNDS)
    assert {s.outline for s in styles} == {True, False} and {s.antialias for s in styles} == {True, False}
    assert not [s for s in styles if (s.background, s.outline) == (HELD_OUT_STYLE[0], True)]
    angles = [o.angle for i in range(100) for o in make_scene(0, "train", i, 32).objects]
    assert np.ptp(angles) > 0.5
    for i in range(50):
        scene = make_scene(0, "style", i, 32)
        assert (scene.style.background, scene.style.outline) == (HELD_OUT_STYLE[0], True)
        assert all((o.color, o.shape) in SEEN_PAIRS for o in scene.objects)


def test_both_sizes_relations_and_counts_occur():
    scenes = [make_scene(0, "train", i, 64) for i in range(300)]
    assert {len(s.objects) for s in scenes} == {1, 2}
    assert {s.relation for s in scenes} == {None, "left", "right", "above", "below"}
    assert {o.size for s in scenes for o in s.objects} == {"small", "big"}


def test_palette_leaves_room_for_the_colour_jitter():
    # The drawn colour is the palette colour +-12 per channel; it must stay in 0..255.
    values = np.array(list(COLORS.values()))
    assert values.min() >= 12 and values.max() <= 255 - 12


def test_held_out_pairs_never_in_train_or_val_and_always_in_heldout():
    for split in ("train", "val"):
        pairs = {(o.color, o.shape) for i in range(1500) for o in make_scene(0, split, i, 32).objects}
        assert not pairs & set(HELD_OUT), f"held-out pairs in {split}: {pairs & set(HELD_OUT)}"
        assert pairs == set(SEEN_PAIRS), f"seen pairs missing from {split}: {set(SEEN_PAIRS) - pairs}"
    for i in range(500):
        scene = make_scene(0, "heldout", i, 32)
        assert any((o.color, o.shape) in HELD_OUT for o in scene.objects), caption(scene)
    # Every colour and every shape is still seen in training.
    assert {c for c, _ in SEEN_PAIRS} == set(COLORS) and {s for _, s in SEEN_PAIRS} == set(shapes.SHAPES)


def test_hard_negatives_change_exactly_the_intended_attribute():
    kinds_seen = set()
    for index in range(200):
        scene = make_scene(2, "train", index, 32)
        positive = caption(scene)
        negatives = hard_negatives(scene)
        if len(scene.objects) == 1:
            assert negatives == {}
            continue
        (size_a, color_a, shape_a), (size_b, color_b, shape_b) = parse(positive)[0]
        relation = parse(positive)[1]
        for kind, negative in negatives.items():
            kinds_seen.add(kind)
            assert negative != positive
            objects, negative_relation = parse(negative)
            if kind == "swap_colors":
                assert objects == [(size_a, color_b, shape_a), (size_b, color_a, shape_b)]
            elif kind == "swap_shapes":
                assert objects == [(size_a, color_a, shape_b), (size_b, color_b, shape_a)]
            else:
                assert kind == "reverse_relation"
                assert objects == parse(positive)[0]
                assert negative_relation == shapes.OPPOSITE[relation]
            if kind == "reverse_relation":
                old = RELATIONS[relation][scene.relation_word]
                new = RELATIONS[negative_relation][scene.relation_word]
                assert positive.replace(f" {old} ", f" {new} ") == negative
            else:   # the same words, only two of them trade places
                assert sorted(negative.rstrip(".").split()) == sorted(positive.rstrip(".").split())
                assert negative_relation == relation
        assert ("swap_shapes" in negatives) == (shape_a != shape_b)
    assert kinds_seen == {"swap_colors", "swap_shapes", "reverse_relation"}


def test_caption_meaning_is_the_scene_without_its_wording():
    """Every caption's meaning is its objects' colours and shapes and the relation, read from the
    left or upper object; the hard negatives (a different scene in the same words) mean
    something else, and two wordings of one scene mean the same."""
    for index in range(300):
        scene = make_scene(3, "train", index, 32)
        pairs = [(o.color, o.shape) for o in scene.objects]
        if scene.relation is None:
            expected = (pairs[0],)
        elif scene.relation in ("left", "above"):
            expected = (pairs[0], scene.relation, pairs[1])
        else:
            expected = (pairs[1], shapes.OPPOSITE[scene.relation], pairs[0])
        assert caption_meaning(caption(scene)) == expected
        for negative in hard_negatives(scene).values():
            assert caption_meaning(negative) != expected
    assert (caption_meaning("there is a little red disc to the left of a blue box.")
            == caption_meaning("a photo of a blue square right of a big red circle.")
            == (("red", "circle"), "left", ("blue", "square")))
    assert caption_meaning("a pink plus sign.") == (("pink", "cross"),)
    for text in ("a dog on a beach.", "a red", "a red circle a blue star.", ""):
        assert caption_meaning(text) is None


@pytest.mark.parametrize("task", ["shape", "color", "color_shape"])
def test_zero_shot_labels_and_prompts(task):
    dataset = ShapesDataset(40, image_size=32, split="heldout", max_objects=1, target=task)
    assert len(dataset.classnames) == {"shape": 6, "color": 6, "color_shape": 36}[task]
    prompts = dataset.class_prompts()
    assert len(prompts) == len(dataset.classnames)
    for name, texts in zip(dataset.classnames, prompts):
        # Each prompt names the class: its colour, and its shape by one of the captions' words for it
        # (every one of those words is used by some prompt).
        assert len(texts) > 1
        if task != "shape":
            assert all(name.split()[0] in text for text in texts)
        if task != "color":
            words = SHAPE_WORDS[name.split()[-1]]
            assert all(any(w in text for w in words) for text in texts)
            assert all(any(w in text for text in texts) for w in words)
    for i in range(len(dataset)):
        obj = dataset.scene(i).objects[0]
        label = dataset[i][1]
        expected = {"shape": obj.shape, "color": obj.color, "color_shape": f"{obj.color} {obj.shape}"}[task]
        assert dataset.classnames[label] == expected


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_objects=1"):
        ShapesDataset(10, target="shape")
    with pytest.raises(ValueError, match="splits are"):
        ShapesDataset(10, split="test")


def test_a_dataset_that_fits_keeps_its_drawn_images(monkeypatch):
    dataset = ShapesDataset(4, 32)
    first = dataset[1][0]
    assert dataset[1][0] is first and not first.flags.writeable   # drawn once, shared read-only
    np.testing.assert_array_equal(first, render(dataset.scene(1), 32))
    monkeypatch.setattr(shapes, "CACHE_BYTES", 4 * 32 * 32 * 3 - 1)
    assert ShapesDataset(4, 32).drawn is None                      # too big: drawn on every read


def test_caption_hard_negatives_rebind_the_captions_own_words():
    """A two-object caption's negative keeps its words (colours or shapes trade places, or the
    relation turns round); a one-object caption's names another colour or shape. Either way it
    means something else, and text that names no shape has none."""
    rng = np.random.default_rng(0)
    kinds = set()
    for index in range(300):
        scene = make_scene(4, "train", index, 32)
        text = caption(scene)
        negative = shapes.caption_hard_negative(text, rng)
        meaning, negative_meaning = caption_meaning(text), caption_meaning(negative)
        assert negative_meaning is not None and negative_meaning != meaning
        assert not {part for part in negative_meaning if isinstance(part, tuple)} & set(HELD_OUT)
        if len(scene.objects) == 1:
            (color, shape), = meaning
            (new_color, new_shape), = negative_meaning
            assert (new_color == color) != (new_shape == shape)   # exactly one of them changed
            kinds.add("one_" + ("shape" if new_color == color else "color"))
        else:
            negatives = {caption_meaning(n) for n in hard_negatives(scene).values()}
            assert negative_meaning in negatives   # one of the evaluation's hard negatives
            kinds.add(next(k for k, n in hard_negatives(scene).items() if caption_meaning(n) == negative_meaning))
    assert kinds == {"one_shape", "one_color", "swap_colors", "swap_shapes", "reverse_relation"}
    assert shapes.caption_hard_negative("a dog on a beach.", rng) is None
