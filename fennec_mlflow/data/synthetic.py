"""Built-in procedural image domains: offline, deterministic-by-seed classification tasks.

Five visually distinct families, several tasks each (see :data:`FAMILIES`):

- ``digits``   sklearn's bundled 8x8 handwritten digits, re-rendered with jitter and colour;
- ``shapes``   geometric shapes (filled, outlined, textured);
- ``gratings`` oriented sinusoidal gratings and periodic textures;
- ``glyphs``   printed letters in ink on ruled paper;
- ``blobs``    Gaussian blobs, counted or sized.

They serve as default historical/target tasks when nothing can be downloaded, and as
source domains on which small models are briefly pre-trained, so families must look
different from each other and tasks inside a family must differ (classes, variants).

Every random choice that shapes a scene (class, position, size, colour, ...) is drawn
independently of the image size, and only pixel noise is drawn per pixel, so the same seed
renders the same scenes at 32 px and at 224 px. Scenes are rendered at the requested size
(shapes and glyphs through a supersampled canvas), never upscaled from a small image.
"""
from __future__ import annotations

import difflib
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from fennec_mlflow.data.tasks import Task, TaskError, from_arrays

# A renderer turns labels into float32 images (n, S, S, 3) in [0, 1]:
# renderer(labels, size, rng, **options).
Renderer = Callable[..., np.ndarray]

MIN_IMAGE_SIZE = 16
# Chunks have a fixed length so that the random stream of each chunk, hence each scene,
# does not depend on the image size; 64 images keep float buffers small at 224 px.
CHUNK = 64
# Shape and glyph masks are drawn on a canvas of at least this many pixels, then box-filtered
# down: anti-aliased edges at 32 px without paying for it at 224 px.
MIN_CANVAS = 96
# Stamps (shape and glyph masks) are drawn once at this resolution and placed by an affine map.
STAMP_SIZE = 256


@dataclass(frozen=True)
class SyntheticSpec:
    """How to build one synthetic task: its family, class names, default size and renderer."""

    family: str
    classes: tuple[str, ...]
    samples_per_class: int
    renderer: Renderer
    options: Mapping[str, Any]
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


SYNTHETIC_TASKS: dict[str, SyntheticSpec] = {}
FAMILIES: dict[str, list[str]] = {}


def _register(name: str, family: str, classes, renderer: Renderer, description: str,
              samples_per_class: int = 80, **options: Any) -> None:
    SYNTHETIC_TASKS[name] = SyntheticSpec(
        family=family,
        classes=tuple(str(c) for c in classes),
        samples_per_class=samples_per_class,
        renderer=renderer,
        options=MappingProxyType(dict(options)),
        description=description,
    )
    FAMILIES.setdefault(family, []).append(name)


# ----------------------------------------------------------------------------- colours, grids


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all inputs in [0, 1], output (n, 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6.0) % 6.0
    return v[:, None] - (v * s)[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _vivid_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    return _hsv_to_rgb(rng.random(n), rng.uniform(0.6, 1.0, n), rng.uniform(0.8, 1.0, n))


def _contrasting_pair(rng: np.random.Generator, n: int, polarity: str) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background colours (n, 3) whose every channel differs by >= 0.1.

    ``polarity`` is ``light-on-dark``, ``dark-on-light`` or ``random`` (per image).
    """
    dark = rng.uniform(0.0, 0.45, (n, 3))
    light = rng.uniform(0.55, 1.0, (n, 3))
    flip = rng.random(n) < 0.5
    if polarity == "light-on-dark":
        flip[:] = False
    elif polarity == "dark-on-light":
        flip[:] = True
    fg = np.where(flip[:, None], dark, light)
    bg = np.where(flip[:, None], light, dark)
    return fg, bg


def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-0.5, 0.5): x of shape (1, 1, S), y of shape (1, S, 1)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5).astype(np.float32)
    return c[None, None, :], c[None, :, None]


def _interpolation_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix of linear-interpolation weights that resizes a 1-D signal."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((dst, src), dtype=np.float32)
    np.add.at(m, (np.arange(dst), lo), 1.0 - w)
    np.add.at(m, (np.arange(dst), hi), w)
    return m


def _smooth_noise(rng: np.random.Generator, n: int, size: int, grid: int, channels: int = 3) -> np.ndarray:
    """Smooth random field (n, S, S, channels) in [0, 1]: a grid x grid lattice, bilinearly resized.

    The lattice, not the pixels, is random, so the field is the same at every image size.
    """
    lattice = rng.random((n, channels, grid, grid), dtype=np.float32)
    resize = _interpolation_matrix(grid, size)
    return (resize @ lattice @ resize.T).transpose(0, 2, 3, 1)


def _background(kind: str, rng: np.random.Generator, base: np.ndarray, size: int) -> np.ndarray:
    """Backgrounds (n, S, S, 3) around per-image base colours: plain, gradient or noise."""
    n = base.shape[0]
    base = base.astype(np.float32)[:, None, None, :]
    if kind == "plain":
        return np.broadcast_to(base, (n, size, size, 3)).copy()
    if kind == "gradient":
        other = np.clip(base + rng.uniform(-0.35, 0.35, (n, 1, 1, 3)).astype(np.float32), 0, 1)
        angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
        x, y = _unit_grid(size)
        t = (0.5 + x * np.cos(angle) + y * np.sin(angle))[..., None]
        image = t * (other - base)
        image += base
        return image
    if kind == "noise":
        field = _smooth_noise(rng, n, size, grid=5)
        return np.clip(base + 0.5 * (field - 0.5), 0, 1)
    raise ValueError(f"unknown background kind {kind!r}")


def _composite(mask: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Alpha-blend foreground (n, 3) or (n, S, S, 3) over background with mask (n, S, S).

    Works in place on ``bg``: at 224 px a chunk is ~10M floats, and temporaries cost more
    than the arithmetic.
    """
    if fg.ndim == 2:
        fg = fg.astype(np.float32)[:, None, None, :]
    alpha = mask[..., None]
    bg *= 1.0 - alpha
    bg += fg * alpha
    return bg


def _finish(images: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Add pixel noise and clip to [0, 1], in place.

    ``noise`` is the standard deviation at 32 px; it shrinks as 1/sqrt(pixels per side) so that
    noise per unit of image area, what a downsampled view sees, does not depend on the size.
    Uniform noise: drawing it is several times cheaper than Gaussian at 224 px. It is the last
    draw of a chunk, being the only one whose count depends on the size.
    """
    if noise > 0:
        amplitude = np.float32(noise * math.sqrt(12.0) * math.sqrt(32.0 / images.shape[1]))
        jitter = rng.random(images.shape, dtype=np.float32)
        jitter -= 0.5
        jitter *= amplitude
        images += jitter
    return np.clip(images, 0.0, 1.0, out=images)


# ----------------------------------------------------------------------------- stamps


def _canvas_factor(size: int) -> int:
    return max(1, math.ceil(MIN_CANVAS / size))


def _random_placements(rng: np.random.Generator, n: int, scale: tuple[float, float],
                       rotation_deg: float, shear: float, aspect: float, shift: float) -> np.ndarray:
    """Per-image placement parameters (n, 6): scale, angle, shear, aspect, dx, dy."""
    return np.stack([
        rng.uniform(*scale, n),
        np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, n)),
        rng.uniform(-shear, shear, n),
        np.exp(rng.uniform(-aspect, aspect, n)),
        rng.uniform(-shift, shift, n),
        rng.uniform(-shift, shift, n),
    ], axis=1)


def _affine_data(placement: np.ndarray, stamp_size: int, canvas: int) -> tuple[float, ...]:
    """PIL AFFINE coefficients mapping canvas pixels back to stamp pixels.

    In unit coordinates the stamp is scaled (anisotropically by ``aspect``), sheared, rotated
    and shifted onto the canvas; PIL wants the inverse map.
    """
    scale, angle, shear, aspect, dx, dy = placement
    cos, sin = math.cos(angle), math.sin(angle)
    forward = (np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
               @ np.diag([scale * aspect, scale / aspect]))
    inverse = np.linalg.inv(forward) * (stamp_size / canvas)
    centre_in = np.array([stamp_size / 2, stamp_size / 2])
    centre_out = np.array([canvas * (0.5 + dx), canvas * (0.5 + dy)])
    offset = centre_in - inverse @ centre_out
    return (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])


def _stamp_masks(stamps: list, placements: np.ndarray, size: int, supersample: bool = True) -> np.ndarray:
    """Place each PIL 'L' stamp by its placement on an S x S image; masks (n, S, S) in [0, 1].

    ``supersample`` draws on a larger canvas and box-filters it down: needed for stamps with
    sharp edges, wasted on blurry ones.
    """
    from PIL import Image

    factor = _canvas_factor(size) if supersample else 1
    canvas = size * factor
    masks = np.empty((len(stamps), size, size), dtype=np.float32)
    for i, (stamp, placement) in enumerate(zip(stamps, placements)):
        placed = stamp.transform((canvas, canvas), Image.AFFINE,
                                 _affine_data(placement, stamp.size[0], canvas), Image.BILINEAR)
        if factor > 1:
            placed = placed.reduce(factor)
        masks[i] = np.asarray(placed, dtype=np.float32) / 255.0
    return masks


# ----------------------------------------------------------------------------- digits


DIGIT_BORDER = 2


@lru_cache(maxsize=1)
def _digit_stamps() -> tuple[list, np.ndarray]:
    """sklearn's 1797 8x8 digits as smooth 96 px PIL stamps (smooth contours at 224 px), and labels.

    Each digit gets a 2-pixel empty border first: sklearn's digits touch their frame, and
    without it the placed stamp would show the frame's straight edge.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    stamps = []
    for img in digits.images:  # values 0..16
        padded = np.pad(img * (255.0 / 16.0), DIGIT_BORDER).astype(np.uint8)
        stamps.append(Image.fromarray(padded).resize((96, 96), Image.BICUBIC))
    return stamps, digits.target.astype(np.int64)


def _render_digits(labels: np.ndarray, size: int, rng: np.random.Generator, *, groups: tuple[tuple[int, ...], ...],
                   background: str, polarity: str, noise: float) -> np.ndarray:
    """Handwritten digits, jittered, in colour; class c is any digit in ``groups[c]``.

    Source digits are drawn with replacement (about 180 per digit exist), each copy with its
    own placement and colours.
    """
    stamps, targets = _digit_stamps()
    pools = [np.flatnonzero(np.isin(targets, group)) for group in groups]
    chosen = np.array([pools[c][rng.integers(len(pools[c]))] for c in labels])
    # The 8x8 digit fills 8/12 of its padded stamp: it ends up 67-87% of the image side.
    # Milder jitter than shapes: an 8x8 digit has little detail to spare.
    placements = _random_placements(rng, labels.size, scale=(1.0, 1.3), rotation_deg=10, shear=0.12,
                                    aspect=0.1, shift=0.08)
    if polarity == "vivid":
        fg = _vivid_colors(rng, labels.size)
        bg = rng.uniform(0.0, 0.3, (labels.size, 3))
    else:
        fg, bg = _contrasting_pair(rng, labels.size, polarity)
    back = _background(background, rng, bg, size)
    raw = _stamp_masks([stamps[i] for i in chosen], placements, size, supersample=False)
    # The bicubic 8x8 source is soft; a ramp turns it into strokes with a clean edge.
    mask = np.clip((raw - 0.25) / 0.3, 0.0, 1.0)
    return _finish(_composite(mask, fg, back), rng, noise)


_DIGIT_NAMES = [str(d) for d in range(10)]
_register("digits-color", "digits", _DIGIT_NAMES, _render_digits,
          "10 digits in vivid colours on dark plain backgrounds",
          groups=tuple((d,) for d in range(10)), background="plain", polarity="vivid", noise=0.02)
_register("digits-noisy-bg", "digits", _DIGIT_NAMES, _render_digits,
          "10 digits on smooth colour-noise backgrounds with pixel noise, either polarity",
          groups=tuple((d,) for d in range(10)), background="noise", polarity="random", noise=0.08)
_register("digits-5class", "digits", _DIGIT_NAMES[:5], _render_digits,
          "digits 0-4 on colour gradients",
          groups=tuple((d,) for d in range(5)), background="gradient", polarity="random", noise=0.03)
_register("digits-inverted", "digits", _DIGIT_NAMES, _render_digits,
          "10 dark digits on light gradient backgrounds",
          groups=tuple((d,) for d in range(10)), background="gradient", polarity="dark-on-light", noise=0.03)
_register("digits-parity", "digits", ["even", "odd"], _render_digits,
          "even vs odd digits on plain backgrounds, either polarity", samples_per_class=200,
          groups=((0, 2, 4, 6, 8), (1, 3, 5, 7, 9)), background="plain", polarity="random", noise=0.03)


# ----------------------------------------------------------------------------- shapes


def _regular_polygon(sides: int, radius: float = 1.0, start_deg: float = -90.0) -> np.ndarray:
    t = np.deg2rad(start_deg) + 2 * np.pi * np.arange(sides) / sides
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer = _regular_polygon(points)
    inner_pts = _regular_polygon(points, inner, start_deg=-90.0 + 180.0 / points)
    return np.stack([outer, inner_pts], axis=1).reshape(-1, 2)


def _cross(arm: float = 0.32) -> np.ndarray:
    a, r = arm, 0.9
    return np.array([(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a),
                     (-r, a), (-r, -a), (-a, -a)])


# Shape outlines in unit coordinates (radius ~1), each a list of (polygon, fill) layers drawn in
# order; a ring is a disc with a hole. Squares and diamonds differ by 45 degrees, so shape
# placements rotate by at most 15 degrees.
SHAPE_LAYERS: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_regular_polygon(64), 255)],
    "square": [(np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]), 255)],
    "triangle": [(_regular_polygon(3) + np.array([0.0, 0.25]), 255)],
    "cross": [(_cross(), 255)],
    "star": [(_star(), 255)],
    "ring": [(_regular_polygon(64), 255), (_regular_polygon(64, 0.58), 0)],
    "diamond": [(np.array([(0.0, -1.0), (0.7, 0.0), (0.0, 1.0), (-0.7, 0.0)]), 255)],
    "hexagon": [(_regular_polygon(6, start_deg=0.0), 255)],
    "ellipse": [(_regular_polygon(64) * np.array([1.0, 0.5]), 255)],
    "crescent": [(_regular_polygon(64), 255), (_regular_polygon(64, 0.85) + np.array([0.45, -0.15]), 0)],
}


@lru_cache(maxsize=None)
def _shape_stamp(shape: str, outline: bool):
    """A shape drawn once, large, centred on a STAMP_SIZE canvas (PIL 'L')."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (STAMP_SIZE, STAMP_SIZE), 0)
    draw = ImageDraw.Draw(img)
    half = STAMP_SIZE / 2
    for polygon, fill in SHAPE_LAYERS[shape]:
        points = [tuple(p) for p in (polygon * 0.45 * STAMP_SIZE + half)]
        if outline:
            draw.polygon(points, outline=fill, width=STAMP_SIZE // 18)
        else:
            draw.polygon(points, fill=fill)
    return img


def _render_shapes(labels: np.ndarray, size: int, rng: np.random.Generator, *, shapes: tuple[str, ...],
                   outline: bool = False, textured: bool = False) -> np.ndarray:
    """One shape per image at a random position, size and colour; textured: striped fill on noise."""
    n = labels.size
    placements = _random_placements(rng, n, scale=(0.45, 0.8), rotation_deg=15, shear=0.1,
                                    aspect=0.15, shift=0.15)
    fg, bg = _contrasting_pair(rng, n, "random")
    back = _background("noise" if textured else "plain", rng, bg, size)
    if textured:
        # Stripes of the foreground colour and a darker shade: the shape is told by its
        # silhouette, not by a flat colour.
        angle = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
        freq = rng.uniform(4, 8, n).astype(np.float32)[:, None, None]
        x, y = _unit_grid(size)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)))
        fg = fg.astype(np.float32)[:, None, None, :] * (0.55 + 0.45 * stripes[..., None])
    mask = _stamp_masks([_shape_stamp(shapes[c], outline) for c in labels], placements, size)
    return _finish(_composite(mask, fg, back), rng, 0.03)


SHAPES_8 = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon")
_register("shapes-4", "shapes", SHAPES_8[:4], _render_shapes,
          "4 filled shapes on plain backgrounds", shapes=SHAPES_8[:4])
_register("shapes-8", "shapes", SHAPES_8, _render_shapes,
          "8 filled shapes on plain backgrounds", shapes=SHAPES_8)
_register("shapes-outline-6", "shapes", ("circle", "square", "triangle", "diamond", "hexagon", "ellipse"),
          _render_shapes, "6 outlined shapes on plain backgrounds",
          shapes=("circle", "square", "triangle", "diamond", "hexagon", "ellipse"), outline=True)
_register("shapes-textured-10", "shapes", SHAPES_8 + ("ellipse", "crescent"), _render_shapes,
          "10 stripe-filled shapes on colour-noise backgrounds",
          samples_per_class=60, shapes=SHAPES_8 + ("ellipse", "crescent"), textured=True)


# ----------------------------------------------------------------------------- gratings


GRATING_FREQUENCIES = (1.5, 2.5, 4.0, 6.5, 10.5)  # cycles per image: well under Nyquist at 32 px
TEXTURES = ("stripes", "checker", "dots", "rings", "waves", "noise")


def _texture_pattern(kind: str, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """A periodic or random pattern (n, S, S) in [-1, 1] with random frequency, angle and phase."""
    angle = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
    freq = rng.uniform(3, 6, n).astype(np.float32)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (2, n)).astype(np.float32)[:, :, None, None]
    x, y = _unit_grid(size)
    u = 2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase[0]
    v = 2 * np.pi * freq * (-x * np.sin(angle) + y * np.cos(angle)) + phase[1]
    if kind == "stripes":
        return np.sin(u)
    if kind == "checker":
        return np.tanh(4 * np.sin(u) * np.sin(v)) / np.tanh(4.0)
    if kind == "dots":
        return np.tanh(4 * (np.cos(u) + np.cos(v) - 1.0))
    if kind == "rings":
        centre = rng.uniform(-0.25, 0.25, (2, n)).astype(np.float32)[:, :, None, None]
        radius = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2)
        return np.sin(2 * np.pi * freq * radius + phase[0])
    if kind == "waves":
        amplitude = rng.uniform(1.5, 2.5, n).astype(np.float32)[:, None, None]
        return np.sin(u + amplitude * np.sin(0.5 * v))
    if kind == "noise":
        field = _smooth_noise(rng, n, size, grid=7, channels=1)[..., 0]
        z = (field - field.mean(axis=(1, 2), keepdims=True)) / (field.std(axis=(1, 2), keepdims=True) + 1e-6)
        return np.tanh(1.5 * z)
    raise ValueError(f"unknown texture {kind!r}")


def _render_gratings(labels: np.ndarray, size: int, rng: np.random.Generator, *, mode: str,
                     bins: int = 0) -> np.ndarray:
    """Gratings classed by orientation bin or frequency bin, or textures classed by kind."""
    n = labels.size
    x, y = _unit_grid(size)
    if mode == "texture":
        pattern = np.empty((n, size, size), dtype=np.float32)
        for kind_index, kind in enumerate(TEXTURES):
            rows = np.flatnonzero(labels == kind_index)
            if rows.size:
                pattern[rows] = _texture_pattern(kind, rng, rows.size, size)
    else:
        if mode == "orientation":
            width = np.pi / bins
            # Jitter within +-35% of a bin: neighbouring bins never overlap.
            angle = labels * width + rng.uniform(-0.35, 0.35, n) * width
            freq = rng.uniform(3, 7, n)
        elif mode == "frequency":
            angle = rng.uniform(0, np.pi, n)
            freq = np.asarray(GRATING_FREQUENCIES)[labels] * rng.uniform(0.88, 1.12, n)
        else:
            raise ValueError(f"unknown grating mode {mode!r}")
        phase = rng.uniform(0, 2 * np.pi, n)
        angle, freq, phase = (a.astype(np.float32)[:, None, None] for a in (angle, freq, phase))
        pattern = np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    fg, bg = _contrasting_pair(rng, n, "random")
    contrast = rng.uniform(0.6, 1.0, n).astype(np.float32)[:, None, None, None]
    mid = ((fg + bg) / 2).astype(np.float32)[:, None, None, :]
    half = ((fg - bg) / 2).astype(np.float32)[:, None, None, :]
    return _finish(mid + contrast * pattern[..., None] * half, rng, 0.03)


_register("gratings-orient-4", "gratings", [f"{a}deg" for a in (0, 45, 90, 135)], _render_gratings,
          "sinusoidal gratings in 4 orientation bins, random frequency and phase",
          mode="orientation", bins=4)
_register("gratings-orient-8", "gratings", [f"{a:g}deg" for a in np.arange(8) * 22.5], _render_gratings,
          "sinusoidal gratings in 8 orientation bins, random frequency and phase",
          mode="orientation", bins=8)
_register("gratings-freq-5", "gratings", [f"{f:g}cpi" for f in GRATING_FREQUENCIES], _render_gratings,
          "sinusoidal gratings in 5 frequency bins (cycles per image), random orientation",
          mode="frequency")
_register("gratings-texture-6", "gratings", TEXTURES, _render_gratings,
          "6 periodic or random textures at random scale and orientation", mode="texture")


# ----------------------------------------------------------------------------- glyphs


@lru_cache(maxsize=None)
def _glyph_font(size: int):
    """A TrueType font: the one embedded in Pillow >= 10.1 (same bytes on every machine, so the
    same glyphs), else DejaVu Sans where installed."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or built without FreeType
        pass
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError as exc:
        raise TaskError(
            "glyph tasks need a TrueType font: install Pillow >= 10.1 with FreeType "
            "(pip install -U pillow) or the DejaVu fonts"
        ) from exc


@lru_cache(maxsize=None)
def _glyph_stamp(char: str, bold: bool):
    """A character drawn once, centred on a STAMP_SIZE canvas (PIL 'L')."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (STAMP_SIZE, STAMP_SIZE), 0)
    draw = ImageDraw.Draw(img)
    font = _glyph_font(int(STAMP_SIZE * 0.62))
    stroke = STAMP_SIZE // 40 if bold else 0
    # Anchor "ms" (baseline) keeps the case difference visible: an "o" is smaller than an "O".
    draw.text((STAMP_SIZE / 2, STAMP_SIZE * 0.72), char, font=font, fill=255, anchor="ms",
              stroke_width=stroke, stroke_fill=255)
    return img


def _render_glyphs(labels: np.ndarray, size: int, rng: np.random.Generator, *, chars: str) -> np.ndarray:
    """Letters in dark ink on light ruled paper, regular or bold, slanted and jittered."""
    n = labels.size
    bold = rng.random(n) < 0.4
    placements = _random_placements(rng, n, scale=(0.75, 1.05), rotation_deg=10, shear=0.25,
                                    aspect=0.12, shift=0.1)
    ink = rng.uniform(0.0, 0.35, (n, 3)) * rng.uniform(0.3, 1.0, (n, 1))
    paper = 1.0 - rng.uniform(0.0, 0.2, (n, 3))
    back = _background("gradient", rng, paper, size)
    # Faint ruled lines: a cue of the family, and clutter the classifier must ignore.
    spacing = rng.uniform(0.15, 0.3, n).astype(np.float32)[:, None, None]
    offset = rng.random(n).astype(np.float32)[:, None, None]
    _, y = _unit_grid(size)
    line_half_width = max(0.6 / size, 0.012)
    distance = np.abs(((y / spacing + offset) % 1.0 - 0.5) * spacing)
    lines = (distance < line_half_width).astype(np.float32) * 0.25
    back *= 1.0 - lines[..., None]
    back += np.array([0.2, 0.3, 0.7], dtype=np.float32) * lines[..., None]
    mask = _stamp_masks([_glyph_stamp(chars[c], bool(b)) for c, b in zip(labels, bold)], placements, size)
    return _finish(_composite(mask, ink, back), rng, 0.04)


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()
_register("glyphs-upper-10", "glyphs", _UPPER[:10], _render_glyphs, "upper-case letters A-J",
          chars=_UPPER[:10])
_register("glyphs-lower-10", "glyphs", _LOWER[10:20], _render_glyphs, "lower-case letters k-t",
          chars=_LOWER[10:20])
_register("glyphs-mixed-20", "glyphs", [f"{c}-upper" for c in _UPPER[:10]] + [f"{c}-lower" for c in _LOWER[:10]],
          _render_glyphs, "letters A-J and a-j: case matters", samples_per_class=60,
          chars=_UPPER[:10] + _LOWER[:10])
_register("glyphs-upper-26", "glyphs", _UPPER, _render_glyphs, "all 26 upper-case letters",
          samples_per_class=60, chars=_UPPER)


# ----------------------------------------------------------------------------- blobs


BLOB_SIGMAS = (0.03, 0.05, 0.08, 0.13)  # fractions of the image side


def _blob_centres(rng: np.random.Generator, counts: np.ndarray, sigmas: np.ndarray, max_count: int) -> np.ndarray:
    """Centres (n, max_count, 2) in unit coordinates, NaN where unused, kept >= 3 sigma apart.

    Candidates are drawn in one batch and picked greedily; if an image runs out of
    candidates its last blobs may overlap (rare, and the count stays as asked).
    """
    n = counts.size
    candidates = rng.uniform(0.12, 0.88, (n, 48, 2))
    centres = np.full((n, max_count, 2), np.nan)
    for i in range(n):
        picked: list[np.ndarray] = []
        for point in candidates[i]:
            if len(picked) == counts[i]:
                break
            if all(np.hypot(*(point - p)) >= 3 * sigmas[i] for p in picked):
                picked.append(point)
        while len(picked) < counts[i]:
            picked.append(candidates[i][len(picked)])
        centres[i, : counts[i]] = picked
    return centres


def _render_blobs(labels: np.ndarray, size: int, rng: np.random.Generator, *, mode: str,
                  counts: tuple[int, ...] = ()) -> np.ndarray:
    """Soft Gaussian blobs on a gradient; class = how many blobs, or how large they are."""
    n = labels.size
    if mode == "count":
        number = np.asarray(counts)[labels]
        sigma = rng.uniform(0.05, 0.07, n)
    elif mode == "size":
        number = rng.integers(1, 3, n)
        sigma = np.asarray(BLOB_SIGMAS)[labels] * rng.uniform(0.9, 1.1, n)
    else:
        raise ValueError(f"unknown blob mode {mode!r}")
    max_count = int(number.max())
    centres = _blob_centres(rng, number, sigma, max_count)
    strength = rng.uniform(0.75, 1.0, (n, max_count))
    fg, bg = _contrasting_pair(rng, n, "light-on-dark")
    back = _background("gradient", rng, bg, size)
    x, y = _unit_grid(size)
    mask = np.zeros((n, size, size), dtype=np.float32)
    inv_two_var = (1.0 / (2 * sigma**2)).astype(np.float32)[:, None, None]
    for b in range(max_count):
        used = ~np.isnan(centres[:, b, 0])
        cx = np.nan_to_num(centres[:, b, 0] - 0.5).astype(np.float32)[:, None, None]
        cy = np.nan_to_num(centres[:, b, 1] - 0.5).astype(np.float32)[:, None, None]
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) * inv_two_var)
        # Maximum, not sum: touching blobs stay two bumps instead of merging into a brighter one.
        mask = np.maximum(mask, blob * (strength[:, b] * used).astype(np.float32)[:, None, None])
    return _finish(_composite(mask, fg, back), rng, 0.04)


_register("blobs-count-3", "blobs", ["1", "2", "3"], _render_blobs, "1, 2 or 3 blobs",
          samples_per_class=100, mode="count", counts=(1, 2, 3))
_register("blobs-count-5", "blobs", ["1", "2", "3", "4", "5"], _render_blobs, "1 to 5 blobs",
          mode="count", counts=(1, 2, 3, 4, 5))
_register("blobs-size-4", "blobs", ["small", "medium", "large", "huge"], _render_blobs,
          "1 or 2 blobs of one of 4 sizes", mode="size")


# ----------------------------------------------------------------------------- public API


def _name_key(name: str) -> int:
    """A stable integer per task name (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode())


def _spec(name: str) -> SyntheticSpec:
    if name in SYNTHETIC_TASKS:
        return SYNTHETIC_TASKS[name]
    close = difflib.get_close_matches(str(name), list(SYNTHETIC_TASKS), n=4, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    listing = "; ".join(f"{family}: {', '.join(names)}" for family, names in FAMILIES.items())
    raise TaskError(f"unknown synthetic task {name!r}.{hint} Families and tasks: {listing}")


def _check_sizes(name: str, samples_per_class: int | None, image_size: int) -> None:
    valid_count = isinstance(samples_per_class, (int, np.integer)) and samples_per_class >= 1
    if samples_per_class is not None and not valid_count:
        raise TaskError(f"synthetic task {name!r}: samples_per_class must be a positive integer, "
                        f"got {samples_per_class!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise TaskError(f"synthetic task {name!r}: image_size must be an integer >= {MIN_IMAGE_SIZE}, "
                        f"got {image_size!r}")


def render_synthetic(name: str, *, samples_per_class: int | None = None, image_size: int = 32,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (n, S, S, 3) and labels (n,) of a synthetic task, classes balanced and shuffled."""
    spec = _spec(name)
    _check_sizes(name, samples_per_class, image_size)
    per_class = int(samples_per_class or spec.samples_per_class)
    key = _name_key(name)
    order = np.random.default_rng([seed, key, 0]).permutation(spec.num_classes * per_class)
    labels = np.repeat(np.arange(spec.num_classes), per_class)[order]
    images = np.empty((labels.size, image_size, image_size, 3), dtype=np.uint8)
    for chunk, start in enumerate(range(0, labels.size, CHUNK)):
        rng = np.random.default_rng([seed, key, 1, chunk])
        rendered = spec.renderer(labels[start:start + CHUNK], int(image_size), rng, **spec.options)
        images[start:start + CHUNK] = np.round(rendered * 255.0).astype(np.uint8)
    return images, labels


def synthetic_task(name: str, *, samples_per_class: int | None = None, image_size: int = 32, seed: int = 0) -> Task:
    """A built-in synthetic task by name (see :data:`SYNTHETIC_TASKS`), rendered at ``image_size``.

    The same (name, samples_per_class, image_size, seed) always gives byte-identical images.
    """
    spec = _spec(name)
    images, labels = render_synthetic(name, samples_per_class=samples_per_class, image_size=image_size, seed=seed)
    return from_arrays(images, labels, name=name, class_names=spec.classes, domain=spec.family,
                       source=f"synthetic:{name}")


def default_mix() -> list[str]:
    """The first task of every family: a broad mix of every visual domain."""
    return [names[0] for names in FAMILIES.values()]


def synthetic_mix(names: list[str] | None = None, *, samples_per_class: int | None = None, image_size: int = 32,
                  seed: int = 0) -> Task:
    """The union of several synthetic tasks with disjoint labels (class ``<task>/<class>``), domain "mix".

    Defaults to :func:`default_mix`. Used to pre-train a broad proxy model.
    """
    names = list(default_mix() if names is None else names)
    if len(names) < 1:
        raise TaskError("synthetic_mix needs at least one task name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaskError(f"synthetic_mix: task(s) listed twice: {', '.join(duplicates)}")
    all_images, all_labels, class_names = [], [], []
    for name in names:
        spec = _spec(name)
        images, labels = render_synthetic(name, samples_per_class=samples_per_class, image_size=image_size, seed=seed)
        all_images.append(images)
        all_labels.append(labels + len(class_names))
        class_names.extend(f"{name}/{c}" for c in spec.classes)
    mix_name = "mix:" + "+".join(names)
    return from_arrays(np.concatenate(all_images), np.concatenate(all_labels), name=mix_name,
                       class_names=class_names, domain="mix", source=f"synthetic:{mix_name}")
