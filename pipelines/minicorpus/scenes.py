"""Tiny synthetic scenes: simple objects on a sky/ground background, with exact boxes and true captions.

A ``Scene`` is sampled from a ``random.Random`` and holds everything the formats need: the image size,
the background, and each object's kind, colour, drawing primitives and pixel box. Captions, region
phrases and class labels are derived from the scene, so they are true of the picture by construction
("a red ball to the left of a green tree on the grass"). Drawing is a handful of PIL primitives on a
small canvas, and encoding is one ``save`` call: cheap enough for tens of thousands of images.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

# Colour names and their RGB values.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "blue": (40, 75, 205),
    "yellow": (240, 210, 35),
    "green": (40, 150, 55),
    "orange": (240, 140, 25),
    "purple": (130, 50, 165),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "brown": (125, 80, 40),
    "gray": (130, 130, 135),
    "pink": (240, 135, 175),
}

GROUNDS: dict[str, tuple[int, int, int]] = {
    "grass": (85, 165, 70),
    "sand": (222, 202, 142),
    "snow": (236, 238, 244),
    "road": (95, 95, 100),
}
GROUND_PHRASE = {"grass": "on the grass", "sand": "on the sand", "snow": "in the snow", "road": "on the road"}
# A colour that would vanish on a ground: never draw it there.
_INVISIBLE = {"grass": {"green"}, "sand": {"yellow"}, "snow": {"white"}, "road": {"gray", "black"}}

SKIES: dict[str, tuple[int, int, int]] = {
    "blue": (125, 185, 240),
    "gray": (172, 176, 182),
    "orange": (245, 170, 110),
}
SKY_PHRASE = {"blue": "under a blue sky", "gray": "under a gray sky", "orange": "under an orange evening sky"}

# Object kinds: where they stand, which colours they come in, WordNet synset and plural.
GROUND_KINDS = ("ball", "box", "tent", "tree", "car", "house")
SKY_KINDS = ("sun", "kite")
KINDS = GROUND_KINDS + SKY_KINDS
KIND_COLORS: dict[str, tuple[str, ...]] = {
    "ball": ("red", "blue", "yellow", "orange", "purple", "white", "pink"),
    "box": ("brown", "red", "blue", "white"),
    "tent": ("orange", "red", "blue", "green", "yellow"),
    "tree": ("green",),
    "car": ("red", "blue", "white", "black", "yellow", "gray"),
    "house": ("white", "red", "yellow", "blue"),
    "sun": ("yellow",),
    "kite": ("red", "blue", "yellow", "purple", "pink", "green"),
}
PLURALS = {"box": "boxes"}
SYNSETS = {
    "ball": "ball.n.01",
    "box": "box.n.01",
    "tent": "tent.n.01",
    "tree": "tree.n.01",
    "car": "car.n.01",
    "house": "house.n.01",
    "sun": "sun.n.01",
    "kite": "kite.n.03",
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")

# Image sizes (width, height): all between 96 and 256 pixels a side.
SIZES = ((160, 120), (128, 128), (192, 144), (224, 160), (256, 192), (120, 160), (144, 108), (200, 150))


def plural(kind: str) -> str:
    return PLURALS.get(kind, kind + "s")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Obj:
    """One drawn object. ``box`` is ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive."""

    kind: str
    color: str
    parts: tuple  # ((primitive, coords, rgb), ...) in drawing order
    box: tuple[int, int, int, int]

    @property
    def phrase(self) -> str:
        """``a red ball``."""
        return f"{article(self.color)} {self.color} {self.kind}"

    @property
    def short(self) -> str:
        """``red ball``."""
        return f"{self.color} {self.kind}"

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.box
        return x0, y0, x1 - x0, y1 - y0


@dataclass
class Scene:
    width: int
    height: int
    ground: str
    sky: str
    horizon: int
    ground_objects: list[Obj] = field(default_factory=list)  # left to right
    sky_objects: list[Obj] = field(default_factory=list)
    # An unnamed backdrop, that no caption mentions: the sky's brightness at its left and right edges,
    # and (primitive, coords, rgb) shapes drawn behind the ground (clouds, hills) and on it (a darker
    # foreground). Only pictures differ by it: no two are alike by chance (near-duplicate pHashes).
    light: tuple[float, float] = (1.0, 1.0)
    far: tuple = ()
    near: tuple = ()

    @property
    def objects(self) -> list[Obj]:
        return self.ground_objects + self.sky_objects

    @property
    def kinds(self) -> list[str]:
        """Distinct kinds in the scene, in object order."""
        return list(dict.fromkeys(o.kind for o in self.objects))


# --- sampling -------------------------------------------------------------------------------------


def sample_scene(rng: random.Random, size: tuple[int, int] | None = None, main: str | None = None) -> Scene:
    """A random scene of one to three objects on the ground and maybe a sun or kite in the sky;
    ``main`` makes one object of that kind the subject (alone on the ground, or alone in the sky
    above one ground object), as in a class-labelled collection. Positions, sizes, the horizon and an
    unnamed backdrop (light, hills, clouds, a darker foreground) vary, so that no two pictures are
    alike by chance."""
    if main is not None and main not in KINDS:
        raise ValueError(f"unknown kind {main!r}")
    width, height = size or rng.choice(SIZES)
    ground = rng.choice(tuple(GROUNDS))
    sky = rng.choice(tuple(SKIES))
    horizon = int(height * rng.uniform(0.3, 0.6))
    scene = Scene(width, height, ground, sky, horizon)
    if main in GROUND_KINDS:
        kinds = [main]
    else:
        kinds = [rng.choice(GROUND_KINDS) for _ in range(1 if main else rng.choice((1, 2, 2, 3, 3)))]
    slot = width / len(kinds)
    jitter = 0.3 if len(kinds) == 1 else 0.15  # a lone object anywhere from a fifth to four fifths across
    for i, kind in enumerate(kinds):
        color = _color(rng, kind, ground)
        size_px = min(slot * rng.uniform(0.35, 0.85), (height - horizon) * 1.3)
        cx = slot * (i + 0.5) + rng.uniform(-jitter, jitter) * slot
        base = rng.uniform(horizon + 0.45 * (height - horizon), height - 3)
        scene.ground_objects.append(_make(kind, color, cx, base, size_px, width, height))
    if main in SKY_KINDS:
        sky_kinds = [main]
    elif main is None:
        sky_kinds = [k for k in SKY_KINDS if rng.random() < 0.35]
    else:
        sky_kinds = []
    if sky == "gray" and "sun" in sky_kinds:
        scene.sky = sky = "blue"
    for j, kind in enumerate(sky_kinds):
        color = rng.choice(KIND_COLORS[kind])
        size_px = min(horizon * rng.uniform(0.4, 0.75), width * 0.3)
        half = width / len(sky_kinds)
        cx = half * (j + 0.5) + rng.uniform(-0.25, 0.25) * half
        base = rng.uniform(size_px + 2, max(size_px + 3, horizon * 0.9))
        scene.sky_objects.append(_make(kind, color, cx, base, size_px, width, height))
    scene.light = (rng.uniform(0.8, 1.12), rng.uniform(0.8, 1.12))
    scene.far, scene.near = _backdrop(rng, scene)
    return scene


def _backdrop(rng: random.Random, scene: Scene) -> tuple[tuple, tuple]:
    """Clouds and hills behind the ground (``far``), a darker foreground strip on it (``near``)."""
    width, height, horizon = scene.width, scene.height, scene.horizon
    far: list[tuple] = []
    for _ in range(rng.choice((0, 1, 2, 3))):
        w = width * rng.uniform(0.12, 0.4)
        h = w * rng.uniform(0.3, 0.6)
        cx, cy = rng.uniform(0, width), rng.uniform(h / 2, max(h / 2 + 1, horizon * 0.75))
        tone = rng.randint(222, 252)
        far.append(("ellipse", (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), (tone, tone, tone)))
    for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):  # the ground rectangle hides their lower halves
        w, h = width * rng.uniform(0.3, 1.0), horizon * rng.uniform(0.15, 0.6)
        cx = rng.uniform(0, width)
        far.append(("ellipse", (cx - w / 2, horizon - h, cx + w / 2, horizon + h),
                    _shade(GROUNDS[scene.ground], rng.uniform(0.68, 0.92))))
    near: list[tuple] = []
    if rng.random() < 0.7:
        top = height - (height - horizon) * rng.uniform(0.15, 0.55)
        near.append(("rect", (0, top, width, height), _shade(GROUNDS[scene.ground], rng.uniform(0.8, 0.94))))
    return tuple(_round(p) for p in far), tuple(_round(p) for p in near)


def _color(rng: random.Random, kind: str, ground: str) -> str:
    choices = [c for c in KIND_COLORS[kind] if c not in _INVISIBLE[ground]] or list(KIND_COLORS[kind])
    return rng.choice(choices)


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(c * factor))) for c in rgb)  # type: ignore[return-value]


def _make(kind: str, color: str, cx: float, base: float, s: float, width: int, height: int) -> Obj:
    """Drawing primitives of one object standing on ``base`` (its lowest y), centred at ``cx``."""
    rgb = COLORS[color]
    s = max(s, 10.0)
    parts: list[tuple] = []
    if kind in ("ball", "sun"):
        r = s / 2
        parts.append(("ellipse", (cx - r, base - 2 * r, cx + r, base), rgb))
        if kind == "ball":
            parts.append(("ellipse", (cx - r * 0.5, base - r * 1.6, cx - r * 0.1, base - r * 1.2), _shade(rgb, 1.3)))
    elif kind == "box":
        h = s * 0.8
        parts.append(("rect", (cx - s / 2, base - h, cx + s / 2, base), rgb))
        parts.append(("rect", (cx - s / 2, base - h, cx + s / 2, base - h + max(2, h * 0.15)), _shade(rgb, 0.7)))
    elif kind == "tent":
        h = s * 0.8
        parts.append(("poly", ((cx - s / 2, base), (cx + s / 2, base), (cx, base - h)), rgb))
        parts.append(("poly", ((cx - s * 0.12, base), (cx + s * 0.12, base), (cx, base - h * 0.45)), _shade(rgb, 0.5)))
    elif kind == "tree":
        trunk_w, trunk_h, crown = s * 0.2, s * 0.55, s * 0.9
        parts.append(("rect", (cx - trunk_w / 2, base - trunk_h, cx + trunk_w / 2, base), COLORS["brown"]))
        top = base - trunk_h - crown * 0.8
        parts.append(("ellipse", (cx - crown / 2, top, cx + crown / 2, top + crown), rgb))
    elif kind == "car":
        wheel = s * 0.12
        body_top = base - wheel - s * 0.3
        parts.append(("rect", (cx - s * 0.28, body_top - s * 0.22, cx + s * 0.22, body_top), _shade(rgb, 0.85)))
        parts.append(("rect", (cx - s / 2, body_top, cx + s / 2, base - wheel), rgb))
        for wx in (cx - s * 0.3, cx + s * 0.3):
            parts.append(("ellipse", (wx - wheel, base - 2 * wheel, wx + wheel, base), COLORS["black"]))
    elif kind == "house":
        wall = s * 0.65
        parts.append(("rect", (cx - s * 0.42, base - wall, cx + s * 0.42, base), rgb))
        parts.append(("poly", ((cx - s / 2, base - wall), (cx + s / 2, base - wall), (cx, base - wall - s * 0.4)),
                      (150, 45, 35)))
        parts.append(("rect", (cx - s * 0.08, base - wall * 0.5, cx + s * 0.08, base), (90, 55, 30)))
    elif kind == "kite":
        h = s
        diamond = ((cx, base - h), (cx + s * 0.35, base - h * 0.55), (cx, base), (cx - s * 0.35, base - h * 0.55))
        parts.append(("poly", diamond, rgb))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    parts = [_round(p) for p in parts]
    return Obj(kind, color, tuple(parts), _bounds(parts, width, height))


def _round(part: tuple) -> tuple:
    primitive, coords, rgb = part
    if primitive == "poly":
        return primitive, tuple((round(x), round(y)) for x, y in coords), rgb
    return primitive, tuple(round(v) for v in coords), rgb


def _bounds(parts: list[tuple], width: int, height: int) -> tuple[int, int, int, int]:
    xs, ys = [], []
    for primitive, coords, _ in parts:
        points = coords if primitive == "poly" else (coords[:2], coords[2:])
        for x, y in points:
            xs.append(x)
            ys.append(y)
    x0, y0 = max(0, min(xs)), max(0, min(ys))
    x1, y1 = min(width, max(xs) + 1), min(height, max(ys) + 1)  # PIL fills the end pixel too
    return int(x0), int(y0), int(x1), int(y1)


# --- drawing --------------------------------------------------------------------------------------


def draw(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene.width, scene.height), SKIES[scene.sky])
    pen = ImageDraw.Draw(image)
    left, right = scene.light
    if (left, right) != (1.0, 1.0):
        for x in range(0, scene.width, 4):  # the sky brighter towards one side
            factor = left + (right - left) * (x + 2) / scene.width
            pen.rectangle((x, 0, x + 3, scene.horizon), fill=_shade(SKIES[scene.sky], factor))
    _parts(pen, scene.far)
    pen.rectangle((0, scene.horizon, scene.width, scene.height), fill=GROUNDS[scene.ground])
    _parts(pen, scene.near)
    for obj in scene.sky_objects + scene.ground_objects:
        _parts(pen, obj.parts)
    return image


def _parts(pen: ImageDraw.ImageDraw, parts: tuple) -> None:
    for primitive, coords, rgb in parts:
        if primitive == "rect":
            pen.rectangle(coords, fill=rgb)
        elif primitive == "ellipse":
            pen.ellipse(coords, fill=rgb)
        else:
            pen.polygon(coords, fill=rgb)


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 88)
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(scene: Scene) -> bytes:
    return encode(draw(scene))


def rotated_jpeg(scene: Scene) -> bytes:
    """The scene stored sideways with EXIF Orientation 6 ("rotate 90 clockwise to view"): a viewer
    that honours the tag (``ImageOps.exif_transpose``) shows the upright scene."""
    stored = draw(scene).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, exif=exif.tobytes())


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels and whose data holds almost nothing: what a
    decompression bomb looks like to ``Image.open``, which reads only the header (a few dozen bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# --- text about a scene ---------------------------------------------------------------------------


def _list(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def _enumerate(objects: list[Obj]) -> str:
    """``two red boxes and a blue car``: equal objects counted, in order of first appearance."""
    counts: dict[tuple[str, str], int] = {}
    for obj in objects:
        counts[(obj.color, obj.kind)] = counts.get((obj.color, obj.kind), 0) + 1
    return _list([f"{article(color)} {color} {kind}" if n == 1 else f"{NUMBER_WORDS[n]} {color} {plural(kind)}"
                  for (color, kind), n in counts.items()])


def _count_phrase(scene: Scene) -> str:
    n = len(scene.ground_objects)
    kinds = {o.kind for o in scene.ground_objects}
    if n == 1:
        return f"a single {scene.ground_objects[0].short}"
    if len(kinds) == 1:
        return f"{NUMBER_WORDS[n]} {plural(scene.ground_objects[0].kind)}"
    return f"{NUMBER_WORDS[n]} things"


def _other(obj: Obj, first: Obj) -> str:
    """``a green tree``, or ``another green tree`` after one."""
    return f"another {obj.short}" if obj.short == first.short else obj.phrase


def caption_variants(scene: Scene) -> list[str]:
    """Several true descriptions of the scene (lower case, no final period)."""
    g = scene.ground_objects
    where, sky = GROUND_PHRASE[scene.ground], SKY_PHRASE[scene.sky]
    out = [f"{_enumerate(g)} {where}"]
    if len(g) >= 2:
        out.append(f"{g[0].phrase} to the left of {_other(g[1], g[0])}")
        out.append(f"{g[-1].phrase} next to {_other(g[-2], g[-1])} {where}")
    else:
        out.append(f"{g[0].phrase} {where} {sky}")
    out.append(f"{_count_phrase(scene)} {where} {sky}")
    for s in scene.sky_objects:
        verb = "shining" if s.kind == "sun" else "flying"
        out.append(f"{s.phrase} {verb} in the sky above {g[0].phrase}")
    out.append(f"there is {g[-1].phrase} {where}")
    out.append(f"a picture of {_enumerate(scene.objects)}")
    return out


def sentence_case(caption: str) -> str:
    return caption[0].upper() + caption[1:] + "."


def region_phrases(scene: Scene) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Visual Genome style region descriptions: (phrase, (x, y, w, h))."""
    regions = []
    where = GROUND_PHRASE[scene.ground]
    for i, obj in enumerate(scene.objects):
        if obj.kind in SKY_KINDS:
            phrase = f"{obj.phrase} in the sky"
        elif i % 2:
            phrase = f"{obj.short} {where}"
        else:
            phrase = obj.phrase
        regions.append((phrase, obj.xywh))
    regions.append((f"the sky is {scene.sky}", (0, 0, scene.width, scene.horizon)))
    ground = "white snow" if scene.ground == "snow" else f"{scene.ground} on the ground"
    regions.append((ground, (0, scene.horizon, scene.width, scene.height - scene.horizon)))
    return regions
