"""A small random-weight YOLO detector for tests, benchmarks and the demo (no pretrained weights can be
had offline), saved as an ultralytics ``.pt`` that ``annotate.detect.model`` can point at.

A YOLO built from its yaml is useless even as a random model: with default initialisation and untrained
batch norms its activations vanish layer by layer, and its class bias makes every score ~1e-4. So the
builder re-estimates the batch-norm statistics on a few mini-corpus pictures and scales the head's last
convolutions to unit-variance outputs with a class prior of 0.1: the boxes, scores, class distributions
and features then vary from image to image, as a trained detector's do. Same seed, same weights
(the calibration runs on one thread, so that the float reductions do not depend on the thread count).
"""

from __future__ import annotations

import math
import random

from pipelines.minicorpus.scenes import KINDS, draw, sample_scene

CLASS_PRIOR = 0.1  # the mean class score the class head is biased to


def build_detector(path: str, names: tuple[str, ...] = KINDS, yaml: str = "yolov8n.yaml", seed: int = 0,
                   image_size: int = 160, calibration_images: int = 16) -> str:
    """Write the detector to ``path`` (a ``.pt``) and return it."""
    from pipelines.annotators.detect import import_ultralytics

    import_ultralytics()
    import torch
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DetectionModel(dict(yaml_model_load(yaml), nc=len(names)), verbose=False)
    model.names = dict(enumerate(names))
    batch = _calibration_batch(seed, calibration_images, image_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions over the batch in one fixed order: the same weights on every machine
    try:
        _calibrate_batch_norms(model, batch)
        _standardise_head(model, batch)
    finally:
        torch.set_num_threads(threads)
    torch.save({"model": model.eval(), "train_args": {"imgsz": image_size, "task": "detect"}}, path)
    return path


def _calibration_batch(seed: int, count: int, size: int):
    import numpy as np
    import torch

    rng = random.Random(seed)
    pictures = [np.asarray(draw(sample_scene(rng)).convert("RGB").resize((size, size))) for _ in range(count)]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float().div(255)


def _calibrate_batch_norms(model, batch) -> None:
    """Batch norms hold the statistics of ``batch`` (a cumulative average over one pass)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()


def _standardise_head(model, batch) -> None:
    """The head's last box and class convolutions give unit-variance outputs on ``batch``."""
    import torch

    head = model.model[-1]
    box_convs, class_convs = [b[-1] for b in head.cv2], [b[-1] for b in head.cv3]
    outputs = {}
    hooks = [c.register_forward_hook(lambda m, _, out: outputs.__setitem__(m, out)) for c in box_convs + class_convs]
    with torch.no_grad():
        model(batch)
        for conv in box_convs + class_convs:
            conv.weight.div_(outputs[conv].std())
            conv.bias.fill_(math.log(CLASS_PRIOR / (1 - CLASS_PRIOR)) if conv in class_convs else 0.0)
    for hook in hooks:
        hook.remove()
