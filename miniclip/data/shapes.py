"""The built-in dataset: coloured shapes with captions, generated on the fly (nothing to download).

What: each sample is one or two shapes (circle, square, triangle, diamond, cross, star) in one of
six colours and two sizes, with a caption that says what is where:
"a photo of a small red circle to the left of a big blue box." A sample is a pure function of
(seed, split, index): its random numbers come from `np.random.default_rng((seed, split, index))`,
so every machine, process and loader worker makes the same pixels and caption for it.

The style varies as real pictures do, and the caption never mentions it: the background (dark,
light, a faint colour, a gradient, a smooth procedural texture, or noise), filled or outlined
shapes (stroke width), hard or anti-aliased edges, position and size within the size word's range,
rotation and aspect, and after drawing a blur, sensor noise and blocky compression-like offsets.
A model that learns "red star" has to ignore all of that. The "style" split holds one combination
out of every other split: outlined shapes on a light background (each seen in training, never
together), so its accuracy measures robustness to a style shift on its own.

Why: CLIP needs image-text pairs; these come in any number, at any size, far faster than a
training step uses them, and they probe what contrastive models are known to get wrong —
composition (which colour belongs to which shape) and spatial relations:
- the six colour-shape pairs in HELD_OUT never appear in the "train" and "val" splits, and every
  "heldout" image contains one, so zero-shot accuracy on "val" vs "heldout" tells whether the model
  composes "red" and "star" or only memorised the pairs it saw;
- the "style" split shows seen pairs in the held-out style (see above);
- `hard_negatives(scene)` gives the caption with the two colours swapped, the two shapes swapped or
  the relation reversed: a model that treats a caption as a bag of words cannot tell those from
  the true caption.

How: each shape is a signed distance function (SDF) d(x, y) in pixels, negative inside. A convex
polygon's SDF is the max over its edges of the distance to the edge's line; a union of parts (the
cross, the six-pointed star) is the min of their SDFs. The coverage clip(0.5 - d, 0, 1) is about the
fraction of a pixel inside the edge, which anti-aliases the edges for free (hard edges: d < 0); an
outline of width w is the band -w < d < 0. Rotation and aspect act on the query points: the SDF is
evaluated at the points turned by -angle and stretched by the aspect's inverse.

Checked by tests/data/test_shapes.py: determinism across processes; the colours, sizes and
relation named in a caption are found in the pixels, under every style; each shape matches an
independent point-in-polygon rasterisation (turned and stretched as the scene says); held-out pairs
never appear in "train", nor the held-out style; hard negatives differ from the positive caption
only in the intended words.
"""
from dataclasses import dataclass, replace

import numpy as np

# No colour, size or shape word starts with a vowel, so "a" is always the right article.
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "purple": (140, 60, 200),
    "pink": (235, 125, 185),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
    "star": ("star",),
}
# The radius of the disc a shape fits in, as a fraction of the image size.
SIZES = {"small": (0.14, 0.17), "big": (0.19, 0.22)}
SIZE_WORDS = {"small": ("small", "little"), "big": ("big", "large")}
# The relation says where objects[0] (the caption's subject) is relative to objects[1].
# The phrasings of opposite relations are parallel lists, so a reversed relation keeps its wording.
RELATIONS = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
TEMPLATES = ("{}.", "a photo of {}.", "an image showing {}.", "a picture of {}.",
             "a drawing of {}.", "there is {}.")

# One pair per colour and per shape, so every colour and every shape is still seen in training.
HELD_OUT = (("red", "star"), ("green", "circle"), ("blue", "triangle"),
            ("yellow", "square"), ("purple", "cross"), ("pink", "diamond"))
ALL_PAIRS = tuple((color, shape) for color in COLORS for shape in SHAPES)
SEEN_PAIRS = tuple(pair for pair in ALL_PAIRS if pair not in HELD_OUT)
# "val": new images of seen pairs; "heldout": unseen pairs; "style": seen pairs in the held-out style
SPLITS = ("train", "val", "heldout", "style")
BACKGROUNDS = ("dark", "light", "tinted", "gradient", "texture", "noise")
HELD_OUT_STYLE = ("light", "outline")   # outlined shapes on a light background: the "style" split only
ONE_OBJECT_SHARE = 0.75   # of the two-object datasets' images, the share with one object
MAX_ANGLE = np.radians(25)   # turns beyond +-30 degrees would make a turned square a diamond
ASPECTS = (0.85, 1.18)       # width / height stretch of a shape
TASKS = ("caption", "shape", "color", "color_shape")
CACHE_BYTES = 256 * 2**20   # a dataset whose images fit in this many bytes keeps them once drawn


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    color: str
    size: str                    # "small" or "big"
    x: float                     # centre, in pixels from the left edge
    y: float                     # centre, in pixels from the top edge
    radius: float                # the shape fits in the disc of this radius
    rgb: tuple                   # the colour actually drawn: COLORS[color] plus a little jitter
    shape_word: str              # the caption's word for the shape ("box" for a square, ...)
    size_word: str               # the caption's word for the size, "" when it leaves it out
    angle: float = 0.0           # turned by this many radians (clockwise on screen)
    aspect: float = 1.0          # stretched to aspect x its width and 1/aspect x its height (area kept)


@dataclass(frozen=True)
class Style:
    """How a scene is drawn; nothing of it is in the caption."""
    background: str = "dark"     # one of BACKGROUNDS
    colors: tuple = ((30, 30, 30), (30, 30, 30))   # the background's two RGB ends (equal when plain)
    direction: float = 0.0       # the gradient's direction, radians
    detail: int = 4              # the texture's grid cells per side
    outline: bool = False        # outlined (True) or filled shapes
    stroke: float = 1.5          # outline width, pixels
    antialias: bool = True       # soft (coverage) or hard edges
    blur: float = 0.0            # Gaussian blur sigma, pixels (0: none)
    noise: float = 0.0           # std of the per-pixel noise added after drawing (0..255 scale)
    blocks: float = 0.0          # std of a per-4x4-block offset, compression-like (0: none)
    pixels_seed: int = 0         # seeds the texture's and the noise's draws


@dataclass(frozen=True)
class Scene:
    objects: tuple               # one or two ShapeObjects, the caption's subject first
    relation: str | None         # where objects[0] is relative to objects[1]; None for one object
    relation_word: int           # which phrasing of the relation the caption uses
    template: str
    style: Style = Style()


def _triangle(x, y, r, pointing_up=True):
    """Equilateral triangle with circumradius r: the max over its three edges of the distance
    n·p - r/2 to the edge's line (unit outward normal n; the inscribed circle has radius r/2)."""
    sign = 1.0 if pointing_up else -1.0   # image y grows downwards
    bottom = sign * y
    upper_left = -0.866025 * x - 0.5 * sign * y
    upper_right = 0.866025 * x - 0.5 * sign * y
    return np.maximum(np.maximum(bottom, upper_left), upper_right) - 0.5 * r


def shape_sdf(shape, x, y, r):
    """Signed distance (pixels) from points (x, y), relative to the centre, to a shape of radius r."""
    if shape == "circle":
        return np.hypot(x, y) - 0.9 * r
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - 0.7 * r
    if shape == "triangle":
        return _triangle(x, y, 0.95 * r)
    if shape == "diamond":
        # The rhombus |x|/a + |y|/b <= 1, taller than wide so that it is not just a turned square;
        # (b|x| + a|y| - ab) / hypot(a, b) is the distance to its edge line.
        a, b = 0.6 * r, 0.95 * r
        return (b * np.abs(x) + a * np.abs(y) - a * b) / np.hypot(a, b)
    if shape == "cross":
        # The union (min) of a horizontal and a vertical bar, each a rectangle (max of two slabs).
        long_x, long_y = np.abs(x) - 0.9 * r, np.abs(y) - 0.9 * r
        thin_x, thin_y = np.abs(x) - 0.3 * r, np.abs(y) - 0.3 * r
        return np.minimum(np.maximum(long_x, thin_y), np.maximum(thin_x, long_y))
    if shape == "star":
        # Six points: the union of a triangle pointing up and one pointing down.
        return np.minimum(_triangle(x, y, 0.95 * r), _triangle(x, y, 0.95 * r, pointing_up=False))
    raise ValueError(f"unknown shape {shape!r}; the shapes are {SHAPES}")


def object_coverage(obj, style, xs, ys):
    """How much of each pixel (centres xs (1, w), ys (h, 1), relative to the object's centre) the
    object covers, 0..1: (h, w)."""
    cos, sin = np.cos(obj.angle), np.sin(obj.angle)
    stretch = np.sqrt(obj.aspect)
    u = (cos * xs + sin * ys) / stretch          # (h, w) the point in the shape's own frame
    v = (cos * ys - sin * xs) * stretch
    d = shape_sdf(obj.shape, u, v, obj.radius)   # (h, w)
    if style.antialias:
        cover = np.clip(0.5 - d, 0.0, 1.0)
        return cover * np.clip(d + style.stroke + 0.5, 0.0, 1.0) if style.outline else cover
    inside = d < 0
    return (inside & (d > -style.stroke) if style.outline else inside).astype(np.float32)


def _gaussian_blur(image, sigma):
    """Separable Gaussian blur of an (S, S, 3) float image, edges extended."""
    radius = max(1, int(np.ceil(2 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        padded = np.pad(image, [(radius, radius) if a == axis else (0, 0) for a in range(3)], mode="edge")
        n = image.shape[axis]
        image = sum(t * np.take(padded, np.arange(k, k + n), axis=axis) for k, t in enumerate(taps))
    return image


def draw_background(style, image_size, rng):
    """The background of a style: float32 (S, S, 3)."""
    low, high = (np.asarray(c, np.float32) for c in style.colors)
    size = image_size
    if style.background == "gradient":
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        along = np.cos(style.direction) * grid[None, :] + np.sin(style.direction) * grid[:, None]   # (S, S)
        t = np.clip(along / 1.42 + 0.5, 0.0, 1.0)[..., None]
    elif style.background == "texture":
        # Value noise: random levels on a coarse grid, smoothly (bilinearly) interpolated.
        cells = rng.random((style.detail + 1, style.detail + 1)).astype(np.float32)
        at = np.linspace(0, style.detail, size, dtype=np.float32)
        i = np.minimum(at.astype(int), style.detail - 1)
        f = at - i
        rows = cells[i] * (1 - f)[:, None] + cells[i + 1] * f[:, None]          # (S, detail + 1)
        t = (rows[:, i] * (1 - f) + rows[:, i + 1] * f)[..., None]             # (S, S, 1)
    elif style.background == "noise":
        t = rng.random((size, size, 1), dtype=np.float32)
    else:   # plain
        t = np.zeros((size, size, 1), np.float32)
    return low + t * (high - low)


def render(scene, image_size):
    """Draw a scene: uint8 (image_size, image_size, 3)."""
    style = scene.style
    rng = np.random.default_rng(style.pixels_seed)
    image = draw_background(style, image_size, rng)
    for obj in scene.objects:
        # Only the pixels of the square around the object's (stretched) disc can be covered.
        reach = obj.radius * max(obj.aspect, 1 / obj.aspect) ** 0.5
        top, left = max(int(obj.y - reach) - 1, 0), max(int(obj.x - reach) - 1, 0)
        bottom = min(int(obj.y + reach) + 2, image_size)
        right = min(int(obj.x + reach) + 2, image_size)
        ys = np.arange(top, bottom, dtype=np.float32)[:, None] + 0.5 - obj.y   # (h, 1) pixel centres
        xs = np.arange(left, right, dtype=np.float32)[None, :] + 0.5 - obj.x   # (1, w)
        cover = object_coverage(obj, style, xs, ys)[..., None]                  # (h, w, 1)
        patch = image[top:bottom, left:right]
        patch += cover * (np.asarray(obj.rgb, np.float32) - patch)
    if style.blur > 0:
        image = _gaussian_blur(image, style.blur)
    if style.noise > 0:
        image += rng.normal(0, style.noise, image.shape).astype(np.float32)
    if style.blocks > 0:
        cells = -(-image_size // 4)
        offsets = rng.normal(0, style.blocks, (cells, cells, 1)).astype(np.float32)
        image += np.repeat(np.repeat(offsets, 4, 0), 4, 1)[:image_size, :image_size]
    return (np.clip(image, 0, 255) + 0.5).astype(np.uint8)


def draw_style(rng, split, image_size):
    """A random Style; never the held-out combination except in the "style" split, always it there."""
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    outline = bool(rng.random() < 0.35)
    if split == "style":
        background, outline = HELD_OUT_STYLE[0], True
    elif background == HELD_OUT_STYLE[0]:
        outline = False

    def gray(low, high, tint=8):
        """A grey level in [low, high) with a faint colour cast of at most `tint` per channel."""
        level = int(rng.integers(low, high))
        return tuple(min(max(level + int(c), 0), 255) for c in rng.integers(-tint, tint + 1, 3))

    # (low, high, tint) of the background's two ends; None: the same colour as the first end.
    ends = {"dark": ((10, 60, 8), None), "light": ((185, 245, 8), None), "tinted": ((40, 150, 30), None),
            "gradient": ((10, 90, 20), (120, 230, 20)), "texture": ((10, 80, 15), (70, 170, 15)),
            "noise": ((10, 60, 8), (60, 120, 8))}[background]
    first = gray(*ends[0])
    levels = (first, first if ends[1] is None else gray(*ends[1]))
    if rng.random() < 0.5:
        levels = levels[::-1]
    return Style(background=background, colors=levels, direction=float(rng.uniform(0, 2 * np.pi)),
                 detail=int(rng.integers(2, 7)), outline=outline,
                 stroke=float(image_size * rng.uniform(0.03, 0.07)), antialias=bool(rng.random() < 0.75),
                 blur=float(rng.uniform(0.3, 0.9)) if rng.random() < 0.25 else 0.0,
                 noise=float(rng.uniform(2, 10)) if rng.random() < 0.4 else 0.0,
                 blocks=float(rng.uniform(2, 8)) if rng.random() < 0.25 else 0.0,
                 pixels_seed=int(rng.integers(2**31)))


def _place_pair(rng, size, r_first, r_second):
    """Centres (along, across) of two discs, the first before the second along an axis.

    They are at least `gap` apart along the axis and no further apart across it than along it,
    so that the relation along the axis is the one a viewer sees.
    """
    margin, gap = 0.02 * size, 0.04 * size
    a1 = rng.uniform(r_first + margin, size - margin - 2 * r_second - gap - r_first)
    a2 = rng.uniform(a1 + r_first + gap + r_second, size - margin - r_second)
    c1 = rng.uniform(r_first + margin, size - margin - r_first)
    along = a2 - a1
    c2 = rng.uniform(max(r_second + margin, c1 - along), min(size - margin - r_second, c1 + along))
    return (a1, c1), (a2, c2)


def make_scene(seed, split, index, image_size, max_objects=2):
    """The scene of sample `index` of a split: a pure function of its arguments."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {SPLITS}")
    rng = np.random.default_rng((seed, SPLITS.index(split), index))
    count = 1 if max_objects == 1 or rng.random() < ONE_OBJECT_SHARE else 2

    first_choices = HELD_OUT if split == "heldout" else SEEN_PAIRS
    pairs = [first_choices[rng.integers(len(first_choices))]]
    if count == 2:
        # Different colours, so that swapping them always changes the caption.
        second_choices = ALL_PAIRS if split == "heldout" else SEEN_PAIRS
        second_choices = [p for p in second_choices if p[0] != pairs[0][0]]
        pairs.append(second_choices[rng.integers(len(second_choices))])
        if rng.random() < 0.5:
            pairs.reverse()   # so that a held-out pair is as often the subject as the object
    sizes = [("small", "big")[rng.integers(2)] for _ in pairs]
    radii = [image_size * rng.uniform(*SIZES[s]) for s in sizes]

    if count == 1:
        relation = None
        centres = [tuple(rng.uniform(radii[0] + 1, image_size - radii[0] - 1, size=2))]
    else:
        relation = tuple(RELATIONS)[rng.integers(4)]
        subject_first = relation in ("left", "above")
        r_first, r_second = radii if subject_first else radii[::-1]
        first, second = _place_pair(rng, image_size, r_first, r_second)
        along_then_across = [first, second] if subject_first else [second, first]
        horizontal = relation in ("left", "right")
        centres = [c if horizontal else c[::-1] for c in along_then_across]   # as (x, y)

    objects = []
    for (color, shape), size, radius, (x, y) in zip(pairs, sizes, radii, centres):
        # Every palette value is at least 12 from 0 and 255, so the jittered colour stays in range.
        rgb = tuple(c + int(j) for c, j in zip(COLORS[color], rng.integers(-12, 13, 3)))
        shape_word = SHAPE_WORDS[shape][rng.integers(len(SHAPE_WORDS[shape]))]
        size_word = SIZE_WORDS[size][rng.integers(2)] if rng.random() < 0.5 else ""
        angle = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE))
        aspect = float(np.exp(rng.uniform(*np.log(ASPECTS))))
        objects.append(ShapeObject(shape, color, size, float(x), float(y), float(radius), rgb,
                                   shape_word, size_word, angle, aspect))
    return Scene(objects=tuple(objects), relation=relation, relation_word=int(rng.integers(2)),
                 template=TEMPLATES[rng.integers(len(TEMPLATES))], style=draw_style(rng, split, image_size))


def caption(scene):
    """The scene's caption, e.g. "a photo of a small red circle to the left of a big blue box."."""
    phrases = [" ".join(w for w in ("a", o.size_word, o.color, o.shape_word) if w) for o in scene.objects]
    if scene.relation is not None:
        phrases.insert(1, RELATIONS[scene.relation][scene.relation_word])
    return scene.template.format(" ".join(phrases))


def hard_negatives(scene):
    """Captions that are false for the scene but use the same words: {kind: caption}.

    Kinds (two-object scenes only; {} for one object): "swap_colors", "swap_shapes" (when the
    shapes differ) and "reverse_relation".
    """
    if len(scene.objects) < 2:
        return {}
    a, b = scene.objects
    negatives = {
        "swap_colors": caption(replace(scene, objects=(replace(a, color=b.color), replace(b, color=a.color)))),
        "reverse_relation": caption(replace(scene, relation=OPPOSITE[scene.relation])),
    }
    if a.shape != b.shape:
        swapped = (replace(a, shape=b.shape, shape_word=b.shape_word),
                   replace(b, shape=a.shape, shape_word=a.shape_word))
        negatives["swap_shapes"] = caption(replace(scene, objects=swapped))
    return negatives


def _named_objects(words):
    """(colour index, shape start, shape end, shape) of each "colour shape" phrase of a caption's
    words, in order ("plus sign" is two words)."""
    found = []
    for i, word in enumerate(words):
        for shape, synonyms in SHAPE_WORDS.items():
            for phrase in synonyms:
                if word in COLORS and words[i + 1:i + 1 + len(phrase.split())] == phrase.split():
                    found.append((i, i + 1, i + 1 + len(phrase.split()), shape))
    return found


def _relation_phrase(words):
    """(phrase, relation, which phrasing) of the longest relation phrasing in the words ("to the
    left of", not the "left of" inside it), or None."""
    text = f" {' '.join(words)} "
    found = [(phrase, name, k) for name, phrasings in RELATIONS.items()
             for k, phrase in enumerate(phrasings) if f" {phrase} " in text]
    return max(found, key=lambda f: len(f[0])) if found else None


def caption_meaning(text):
    """What a caption says, without its wording: ((colour, shape), ...) with the relation, or None.

    "a photo of a little red disc left of a blue box." and "there is a blue square to the right
    of a big red circle." both mean (("red", "circle"), "left", ("blue", "square")): templates,
    synonyms and the size words are dropped, and a right-of or below relation is read from its
    other end. Pairs of a batch whose captions mean the same are positives of the multi-positive
    loss (miniclip/losses.py): one-object images of the same colour and shape are common in a batch,
    and the one-hot loss would push each away from the other's caption though it describes it.
    Sizes are left out because a caption may not state them ("a red circle" is true of both), and a
    key has to split captions into classes. Text that is not a caption of this dataset gives None.
    """
    words = text.replace(".", " ").split()
    objects = [(words[c], shape) for c, _, _, shape in _named_objects(words)]
    relation = _relation_phrase(words)
    relation = None if relation is None else relation[1]
    if len(objects) == 1 and relation is None:
        return (objects[0],)
    if len(objects) != 2 or relation is None:
        return None
    if relation in ("right", "below"):
        objects, relation = objects[::-1], OPPOSITE[relation]
    return (objects[0], relation, objects[1])


def caption_hard_negative(text, rng, avoid=HELD_OUT):
    """One of caption_hard_negatives(text, avoid), drawn with rng; None when there is none."""
    negatives = caption_hard_negatives(text, avoid)
    return negatives[rng.integers(len(negatives))] if negatives else None


def caption_hard_negatives(text, avoid=HELD_OUT):
    """The false captions made of the caption's own words, for the NegCLIP loss
    (miniclip/losses.py: clip_loss_with_negatives); [] for text that names no shape.

    Two objects: the colours swapped, the shapes swapped, or the relation reversed (what
    hard_negatives(scene) makes from a scene for the evaluation). One object: its colour or its
    shape replaced by another. Either way the words stay and what they say changes, so the towers
    must learn which colour and which shape are where to score it below the truth, not just which
    words occur. Negatives that would name a colour-shape pair of `avoid` are not made: the
    held-out pairs must never be written in training, not even as a false caption (the model
    would learn that "red star" matches nothing).
    """
    words = text.replace(".", " . ").split()
    objects = _named_objects(words)
    candidates = []
    if len(objects) == 1:
        (c, start, end, shape), = objects
        candidates += [words[:c] + [color] + words[c + 1:] for color in COLORS if color != words[c]]
        candidates += [words[:start] + SHAPE_WORDS[other][0].split() + words[end:] for other in SHAPES if other != shape]
    elif len(objects) == 2:
        (c0, s0, e0, shape0), (c1, s1, e1, shape1) = objects
        swapped = list(words)
        swapped[c0], swapped[c1] = words[c1], words[c0]
        candidates.append(swapped)
        if shape0 != shape1:
            candidates.append(words[:s0] + words[s1:e1] + words[e0:s1] + words[s0:e0] + words[e1:])
        phrase, name, k = _relation_phrase(words[e0:c1])   # it sits between the two objects
        between = " ".join(words[e0:c1])
        candidates.append(words[:e0] + between.replace(phrase, RELATIONS[OPPOSITE[name]][k], 1).split() + words[c1:])
    negatives = [" ".join(c).replace(" .", ".") for c in candidates]
    return [n for n in negatives if not set(_pairs_named(n)) & set(avoid)]


def _pairs_named(text):
    """The (colour, shape) pairs a caption names."""
    meaning = caption_meaning(text) or ()
    return [part for part in meaning if isinstance(part, tuple)]


def zeroshot_classes(task):
    """(classnames, prompts) for zero-shot classification of one-object images.

    task "shape", "color" or "color_shape". prompts[k] lists the texts whose mean embedding is
    class k's classifier (prompt ensembling, Radford et al. 2021, 3.1.4): every template with every
    word the captions use for the shape ("circle" and "disc"), and for "shape" ("color") every
    colour (shape), so the prompts read like the training captions.
    """
    def phrases(color, shape):
        return [f"a {color} {word}" for word in SHAPE_WORDS[shape]]

    if task == "color_shape":
        classes = [f"{color} {shape}" for color, shape in ALL_PAIRS]
        prompts = [[t.format(p) for p in phrases(c, s) for t in TEMPLATES] for c, s in ALL_PAIRS]
    elif task == "shape":
        classes = list(SHAPES)
        prompts = [[t.format(p) for c in COLORS for p in phrases(c, s) for t in TEMPLATES] for s in SHAPES]
    elif task == "color":
        classes = list(COLORS)
        prompts = [[t.format(p) for s in SHAPES for p in phrases(c, s) for t in TEMPLATES] for c in COLORS]
    else:
        raise ValueError(f"unknown zero-shot task {task!r}; the tasks are 'shape', 'color', 'color_shape'")
    return classes, prompts


class ShapesDataset:
    """`num_samples` generated samples of one split: dataset[i] = (uint8 (S, S, 3) image, target).

    target="caption" gives the caption (for training and retrieval); "shape", "color" and
    "color_shape" give the class index for zero-shot classification (these need max_objects=1),
    with `classnames` and `class_prompts()` to build the classifier.

    Drawing a sample costs about as much as a tenth of its training step, so a dataset that fits in
    CACHE_BYTES keeps the images it has drawn: the 5 epochs of the default run draw each once,
    and the evaluation sets are drawn once for all evaluations. (A sample is a pure function of its
    index, so a kept image is the image it would draw again.)
    """

    def __init__(self, num_samples, image_size=64, split="train", seed=0, max_objects=2, target="caption"):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; the splits are {SPLITS}")
        if target not in TASKS:
            raise ValueError(f"unknown target {target!r}; the targets are {TASKS}")
        if target != "caption" and max_objects != 1:
            raise ValueError(f"target={target!r} classifies one object per image: pass max_objects=1")
        if max_objects not in (1, 2):
            raise ValueError(f"max_objects must be 1 or 2, got {max_objects}")
        self.num_samples, self.image_size, self.split = num_samples, image_size, split
        self.seed, self.max_objects, self.target = seed, max_objects, target
        self.classnames = zeroshot_classes(target)[0] if target != "caption" else None
        self.drawn = {} if num_samples * image_size * image_size * 3 <= CACHE_BYTES else None

    def __len__(self):
        return self.num_samples

    def describe(self, index):
        return f"shapes sample {index} (seed={self.seed}, split={self.split!r})"

    def scene(self, index):
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return make_scene(self.seed, self.split, index, self.image_size, self.max_objects)

    def __getitem__(self, index):
        scene = self.scene(index)
        image = self.drawn.get(index) if self.drawn is not None else None
        if image is None:
            image = render(scene, self.image_size)
            if self.drawn is not None:
                image.setflags(write=False)   # shared by every later read of this sample
                self.drawn[index] = image
        if self.target == "caption":
            return image, caption(scene)
        obj = scene.objects[0]
        name = {"shape": obj.shape, "color": obj.color, "color_shape": f"{obj.color} {obj.shape}"}
        return image, self.classnames.index(name[self.target])

    def class_prompts(self):
        return zeroshot_classes(self.target)[1]
