"""Location encodings of a region, derived from its stored box (``ann/detect``: ``[x1, y1, x2, y2]``
normalised to [0, 1] by the image size), so that no encoding has to be stored.

- UNITER §3.1: a 7-d vector ``[x1, y1, x2, y2, w, h, w * h]`` (normalised coordinates, width, height, area).
- mu-VLA §3.1: a 5-d vector ``[x1/W, y1/H, x2/W, y2/H, area / (W * H)]``; with a normalised box the
  coordinates are the box itself and the relative area is ``w * h``.
"""

from __future__ import annotations

from collections.abc import Sequence


def _checked(box: Sequence[float]) -> tuple[float, float, float, float]:
    if len(box) != 4:
        raise ValueError(f"a box is [x1, y1, x2, y2], got {len(box)} values")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0):
        raise ValueError(f"expected a normalised box with x1 <= x2, y1 <= y2 in [0, 1], got {list(box)}")
    return x1, y1, x2, y2


def uniter_location(box: Sequence[float]) -> list[float]:
    """UNITER §3.1: ``[x1, y1, x2, y2, w, h, w * h]``."""
    x1, y1, x2, y2 = _checked(box)
    w, h = x2 - x1, y2 - y1
    return [x1, y1, x2, y2, w, h, w * h]


def muvla_location(box: Sequence[float]) -> list[float]:
    """mu-VLA §3.1: ``[x1/W, y1/H, x2/W, y2/H, area / (W * H)]``."""
    x1, y1, x2, y2 = _checked(box)
    return [x1, y1, x2, y2, (x2 - x1) * (y2 - y1)]


def locations(boxes, kind: str = "uniter"):
    """Both encodings above for ``[R, 4]`` normalised boxes at once (numpy, for collation): ``[R, 7]``
    UNITER or ``[R, 5]`` mu-VLA, float32. Raises ValueError on a box the scalar functions would refuse."""
    import numpy as np

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    if not ((0 <= x1) & (x1 <= x2) & (x2 <= 1) & (0 <= y1) & (y1 <= y2) & (y2 <= 1)).all():
        raise ValueError("expected normalised boxes with x1 <= x2, y1 <= y2 in [0, 1]")
    w, h = x2 - x1, y2 - y1
    if kind == "uniter":
        columns = [x1, y1, x2, y2, w, h, w * h]
    elif kind == "muvla":
        columns = [x1, y1, x2, y2, w * h]
    else:
        raise ValueError(f"unknown location encoding {kind!r}; expected uniter or muvla")
    return np.stack(columns, axis=1).astype(np.float32)
