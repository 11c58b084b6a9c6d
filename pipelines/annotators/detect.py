"""Object detection and ground-truth tags of images, for ``ann/detect/`` (schemas.tables.ANN_DETECT).

UNIMO §3.2: detector boxes with class confidence > 0.2, at most 100 per image. UNITER §3.2 (MRC-kl)
needs the detector's full class distribution per region, which ultralytics' NMS throws away: NMS here
returns the kept anchors' indices and the distribution is read from the raw head output at them.
Region features are pooled from the detector's own feature maps (the Detect head's inputs, one per
stride): the exact mean of each map over the box (an integral image: cheaper than RoIAlign's sampled
grid, which cost a third of the forward pass), concatenated across strides.
Ground-truth objects (``meta.objects`` of COCO instances, VG objects, OpenImages boxes) become regions
of origin ``annotation`` instead of, or beside, the detector's (a source's ``tags`` option); when the
detector runs, features are pooled at those boxes too.

Heavy frameworks (torch, ultralytics, PIL) are imported inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass

import numpy as np

from retrieval.models import resolve_device
from schemas.keys import shard_name
from schemas.records import Reason, Reject

DETECTOR, ANNOTATION = "detector", "annotation"  # region origins
IMAGE_MODALITIES = ("pair", "image")
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # object reprs would make reject details differ


def uses_detector(tags: str) -> bool:
    return tags in ("detector", "both")


def uses_annotations(tags: str) -> bool:
    return tags in ("annotations", "both")


def import_ultralytics():
    """Import ultralytics the way this project needs it, and return it.

    Before the import: never download or pip-install anything, keep its settings file and
    matplotlib's cache out of the home folder (a temp folder unless the user set them), and keep its
    banners (the first-run settings message) out of our output unless the user set ``YOLO_VERBOSE``. After it: undo
    its process-wide monkey patches of ``PIL.Image.open`` (which turns every undecodable image into an
    attempt to pip-install pi-heif, a ModuleNotFoundError offline, breaking the corrupt-image rejects of
    every stage in the process) and of ``torch.save``. torchvision is imported with it: ultralytics' NMS takes
    torchvision's kernel (a stable sort) only when torchvision is already imported, else its own (an unstable
    argsort), and saturated scores tie often, so which boxes survive would depend on what the process imported
    before.
    """
    base = os.path.join(tempfile.gettempdir(), "unicorpus-ultralytics")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_CONFIG_DIR", base)
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(base, "matplotlib"))
    import torch
    import torchvision  # noqa: F401 (see above)
    import ultralytics
    from PIL import Image
    from ultralytics.utils import patches

    Image.open, torch.save = patches._image_open, patches._torch_save
    return ultralytics


def file_digest(path: str) -> str:
    """sha256 (16 hex digits) of a model file: replaced weights at the same path redo the shards."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# --- geometry: the letterboxed detector input <-> the normalised box of the stored image -------------


@dataclass(frozen=True)
class Letterbox:
    """Where an image of ``width`` x ``height`` lands in the square ``size`` input: the same resize and
    centred padding as ultralytics' ``LetterBox(auto=False)`` and ``ops.scale_boxes``."""

    width: int
    height: int
    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int

    @classmethod
    def of(cls, width: int, height: int, size: int) -> Letterbox:
        gain = min(size / height, size / width)
        new_w, new_h = max(round(width * gain), 1), max(round(height * gain), 1)
        return cls(width, height, new_w / width, new_h / height,
                   round((size - new_w) / 2 - 0.1), round((size - new_h) / 2 - 0.1))

    def to_input(self, box: list[float]) -> list[float]:
        """A normalised box -> input pixels."""
        x1, y1, x2, y2 = box
        sx, sy = self.width * self.gain_x, self.height * self.gain_y
        return [x1 * sx + self.pad_x, y1 * sy + self.pad_y, x2 * sx + self.pad_x, y2 * sy + self.pad_y]

    def to_normalised(self, box: list[float]) -> list[float]:
        """Input pixels -> a box normalised by the image size, clipped to [0, 1]."""
        x1, y1, x2, y2 = box
        sx, sy = self.width * self.gain_x, self.height * self.gain_y
        return [_clip((x1 - self.pad_x) / sx), _clip((y1 - self.pad_y) / sy),
                _clip((x2 - self.pad_x) / sx), _clip((y2 - self.pad_y) / sy)]


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)


# --- regions ------------------------------------------------------------------------------------------


@dataclass
class Detection:
    """One image's detector output: boxes in input pixels, scores, per-class scores (n, classes), pooled
    features (n, dim) and the features pooled at the image's extra (ground-truth) boxes (m, dim). The
    arrays are float32 numpy: a shard's regions as Python floats would take 5x the memory."""

    boxes: list[list[float]]
    scores: list[float]
    class_scores: np.ndarray
    features: np.ndarray
    extra_features: np.ndarray


def class_distribution(class_scores: np.ndarray) -> np.ndarray:
    """YOLO scores classes with independent sigmoids; MRC-kl (UNITER §3.2) needs a distribution: the
    scores normalised to sum 1 (uniform when all are zero)."""
    scores = np.asarray(class_scores, dtype=np.float32)
    total = scores.sum()
    if total <= 0:
        return np.full(len(scores), 1.0 / len(scores), dtype=np.float32)
    return scores / total


def detector_regions(detection: Detection, letterbox: Letterbox, names: list[str], min_confidence: float,
                     max_boxes: int) -> list[dict]:
    """Regions of boxes with score > ``min_confidence``, best first, at most ``max_boxes`` (UNIMO §3.2)."""
    kept = [i for i, score in enumerate(detection.scores) if score > min_confidence]
    kept.sort(key=lambda i: -detection.scores[i])
    regions = []
    for i in kept[:max_boxes]:
        scores = detection.class_scores[i]
        regions.append({"box": letterbox.to_normalised(detection.boxes[i]), "label": names[int(np.argmax(scores))],
                        "score": detection.scores[i], "origin": DETECTOR,
                        "class_probs": class_distribution(scores), "feature": detection.features[i]})
    return regions


def annotation_objects(meta: dict) -> list[tuple[str, list[float]]]:
    """(label, normalised box) of a sample's ground-truth objects: ``name``, or VG's first of ``names``."""
    objects = []
    for obj in meta.get("objects") or ():
        label = obj.get("name") or (obj.get("names") or [None])[0]
        if label and obj.get("box"):
            objects.append((label, [float(v) for v in obj["box"]]))
    return objects


def annotation_regions(objects: list[tuple[str, list[float]]], features: np.ndarray | None) -> list[dict]:
    """Ground truth as regions: score 1, no class distribution, features where the detector pooled them."""
    return [{"box": box, "label": label, "score": 1.0, "origin": ANNOTATION, "class_probs": None,
             "feature": None if features is None else features[i]}
            for i, (label, box) in enumerate(objects)]


# --- the detector --------------------------------------------------------------------------------------


def load_network(path: str, seed: int = 0):
    """The ultralytics DetectionModel of a weights file, or of a model yaml with random weights (drawn
    from ``seed``, so a yaml gives the same model every time)."""
    import_ultralytics()
    import torch
    from ultralytics import YOLO

    random_weights = path.endswith((".yaml", ".yml"))
    with torch.random.fork_rng(enabled=random_weights):
        if random_weights:
            torch.manual_seed(seed)
        return YOLO(path).model


class Detector:
    """An ultralytics YOLO detector, loaded once, run on batches of decoded RGB images."""

    def __init__(self, path: str, image_size: int = 640, device: str = "auto", min_confidence: float = 0.2,
                 max_boxes: int = 100, iou_threshold: float = 0.7):
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        network = load_network(path)
        head = network.model[-1]
        if not hasattr(head, "cv3"):
            raise ValueError(f"{path}: not a detection model (its head is {type(head).__name__})")
        self.device = resolve_device(device)
        # predict's own model handling (fused batch norms, channels-last weights where oneDNN or CUDA run
        # them 2x faster); end2end off: an NMS-free head (YOLOv10/26) outputs no class distribution
        self.network = AutoBackend(network.eval(), torch.device(self.device), fuse=True, verbose=False,
                                   end2end=False).model
        self.names = [network.names[i] for i in range(len(network.names))]
        self.strides = [float(s) for s in head.stride]
        self.dim = sum(branch[0].conv.in_channels for branch in head.cv3)
        self.image_size, self.min_confidence = image_size, min_confidence
        self.max_boxes, self.iou_threshold = max_boxes, iou_threshold
        self.threads = _process_cpus()

    def detect(self, images: list, extra_boxes: list[list[list[float]]]) -> list[Detection]:
        """``images``: HWC uint8 RGB arrays; ``extra_boxes``: per image, boxes in input pixels at which
        features are pooled as well (ground truth)."""
        import torch

        import_ultralytics()
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils.nms import non_max_suppression

        letterbox = LetterBox((self.image_size, self.image_size), auto=False, stride=int(max(self.strides)))
        batch = np.ascontiguousarray(np.stack([letterbox(image=image) for image in images]).transpose(0, 3, 1, 2))
        with torch.inference_mode(), torch_threads(self.threads):  # contiguous NCHW, as predict feeds it
            x = torch.from_numpy(batch).to(self.device).float().div_(255)
            y, raw = self.network(x)
            feature_maps = raw.get("one2many", raw)["feats"]
            kept, indices = non_max_suppression(y, self.min_confidence, self.iou_threshold,
                                                max_det=self.max_boxes, return_idxs=True)
            nc = len(self.names)
            boxes = [torch.cat([k[:, :4], torch.tensor(e, dtype=k.dtype, device=k.device).view(-1, 4)])
                     for k, e in zip(kept, extra_boxes, strict=True)]
            pooled = self._pool(feature_maps, boxes).cpu().split([len(b) for b in boxes])
            out = []
            for b, (k, idx, feats) in enumerate(zip(kept, indices, pooled, strict=True)):
                n, idx = len(k), idx.long().view(-1)  # an image without boxes has a float (0, 1) placeholder
                out.append(Detection(k[:, :4].tolist(), k[:, 4].tolist(), y[b, 4:4 + nc, idx].T.float().cpu().numpy(),
                                     feats[:n].numpy(), feats[n:].numpy()))
        return out

    def _pool(self, feature_maps, boxes):
        """Each box's mean feature on every stride's map, strides concatenated: (boxes, dim)."""
        import torch

        image = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=b.device) for i, b in enumerate(boxes)])
        flat = torch.cat(boxes).double()
        return torch.cat(
            [box_means(f, flat / s, image) for f, s in zip(feature_maps, self.strides, strict=True)], dim=1
        )


def _process_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the OS has one: a container's or taskset's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(count: int):
    """Run with ``count`` torch threads, then restore the process' setting. A CPU convolution's sums run in
    an order set by the thread count, and the count a process has depends on its history (ultralytics sets
    ``OMP_NUM_THREADS=1`` when imported first, its ``predict`` sets another), so the detector fixes its own:
    the CPUs this process may use, the same in every run on one machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def box_means(feature_map, boxes, image):
    """The mean of ``feature_map`` (B, C, H, W) over each box (N, 4; x1 y1 x2 y2 in cells) of image
    ``image[n]``, the map read as constant over each cell: exact, from an integral image (a summed-area
    table read at fractional corners). A box under one cell wide or high is widened to one cell."""
    import torch

    b, c, h, w = feature_map.shape
    table = _summed_area(feature_map).view(-1, c)
    x1, x2 = _span(boxes[:, 0], boxes[:, 2], w)
    y1, y2 = _span(boxes[:, 1], boxes[:, 3], h)
    # F(x2, y2) - F(x1, y2) - F(x2, y1) + F(x1, y1), each F bilinear in the table (exact for a map constant
    # over each cell): 16 weighted table rows per box, summed by one batched matrix product
    x, y = torch.stack([x2, x1, x2, x1], 1), torch.stack([y2, y2, y1, y1], 1)
    x0, y0 = x.floor().clamp(0, w - 1), y.floor().clamp(0, h - 1)
    fx, fy = x - x0, y - y0
    wx = torch.stack([1 - fx, fx, 1 - fx, fx], 2)
    wy = torch.stack([1 - fy, 1 - fy, fy, fy], 2)
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=wx.dtype, device=wx.device).view(1, 4, 1)
    weights = sign * wx * wy / ((x2 - x1) * (y2 - y1)).view(-1, 1, 1)
    step = torch.tensor([0, 1, w + 1, w + 2], device=image.device)  # the cell corner's 4 table neighbours
    rows = (image * (h + 1) * (w + 1)).view(-1, 1, 1) + (y0.long() * (w + 1) + x0.long()).unsqueeze(2) + step
    gathered = table.index_select(0, rows.view(-1)).view(len(rows), 16, c)
    return torch.bmm(weights.view(-1, 1, 16), gathered).view(-1, c).float()


def _summed_area(feature_map):
    """The (B, H + 1, W + 1, C) float64 table of sums over ``[0, y) x [0, x)``, channels last (the
    detector's maps are stored so already). Row by row: torch's cumsum over a middle axis is 4x slower."""
    import torch

    b, c, h, w = feature_map.shape
    table = torch.zeros((b, h + 1, w + 1, c), dtype=torch.float64, device=feature_map.device)
    table[:, 1:, 1:] = feature_map.permute(0, 2, 3, 1)
    for y in range(2, h + 1):
        table[:, y].add_(table[:, y - 1])
    for x in range(2, w + 1):
        table[:, :, x].add_(table[:, :, x - 1])
    return table


def _span(low, high, cells: int):
    """One side of boxes, at least one cell long, inside [0, cells]."""
    middle, half = (low + high) / 2, ((high - low) / 2).clamp(min=0.5)
    high = (middle + half).clamp(1, cells)
    return (middle - half).clamp(min=0).minimum(high - 1), high


# --- one shard --------------------------------------------------------------------------------------------


def decode_rgb(data: bytes):
    """The image as an HWC uint8 RGB array; a ValueError with the decoder's reason if it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            return np.asarray(opened.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{type(e).__name__}: {_ADDRESS.sub('the bytes', str(e))}") from e


@dataclass
class DetectSettings:
    tags: str  # the source's option: detector | annotations | both
    batch_size: int = 16
    min_confidence: float = 0.2
    max_boxes: int = 100


def annotate_images(shard, settings: DetectSettings, detector: Detector | None) -> tuple[list[dict], list[Reject], int]:
    """One row per image of the shard (``pipelines.sidecar_tables.ShardInput``), or a corrupt_image reject."""
    if uses_detector(settings.tags) and detector is None:
        raise ValueError(f"tags {settings.tags!r} need a detector")
    samples = [row for row in shard.rows if row["modality"] in IMAGE_MODALITIES]
    rows, rejects = [], []
    for start in range(0, len(samples), settings.batch_size):  # decoded a batch at a time: bounded memory
        decoded = []
        for row in samples[start:start + settings.batch_size]:
            try:
                decoded.append((row, decode_rgb(shard.image_bytes(row))))
            except ValueError as e:
                rejects.append(Reject(shard.source, f"raw/{shard.source}/{shard_name(shard.shard)}.tar",
                                      Reason.CORRUPT_IMAGE, f"{e} (image at byte {row['image_offset']})", row["key"]))
        if decoded:
            rows += _batch_rows(shard.source, decoded, settings, detector)
    return rows, rejects, len(samples)


def _batch_rows(source: str, batch: list, settings: DetectSettings, detector: Detector | None) -> list[dict]:
    objects = [annotation_objects(row["meta"]) if uses_annotations(settings.tags) else [] for row, _ in batch]
    if not uses_detector(settings.tags):
        return [
            _row(source, row, image, annotation_regions(objs, None))
            for (row, image), objs in zip(batch, objects, strict=True)
        ]
    letterboxes = [Letterbox.of(image.shape[1], image.shape[0], detector.image_size) for _, image in batch]
    extra = [[lb.to_input(box) for _, box in objs] for lb, objs in zip(letterboxes, objects, strict=True)]
    detections = detector.detect([image for _, image in batch], extra)
    return [_row(source, row, image,
                 annotation_regions(objs, d.extra_features)
                 + detector_regions(d, lb, detector.names, settings.min_confidence, settings.max_boxes))
            for (row, image), objs, d, lb in zip(batch, objects, detections, letterboxes, strict=True)]


def _row(source: str, row: dict, image, regions: list[dict]) -> dict:
    return {"key": row["key"], "source": source, "width": image.shape[1], "height": image.shape[0],
            "regions": regions}
