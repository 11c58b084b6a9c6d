"""The batch a collator produces and the model and objectives consume (one dataclass, one contract).

Tensors only in the fields; torch is never imported here (``schemas`` stays light), so the types are
strings. Shapes: ``B`` samples, ``T`` text positions, ``R`` regions, ``D`` region feature size, ``C``
detector classes, ``P`` sub-word targets per region. The unified format (UNIMO App. A): every sample
has both streams; an absent stream is all-False in its mask, so attention never sees it.

Conventions: ids and labels are ``long``; ``-100`` marks a position without a target (torch's
``ignore_index``); masks are ``bool`` with True = real / selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

IGNORE_INDEX = -100


@dataclass
class Batch:
    task: str                                    # the packed task every sample of the batch came from
    keys: list[str]                              # packed sample keys, in batch order
    objectives: tuple[str, ...] = ()             # what the batch trains: its kind's objectives (the loader's draw)
    image_keys: list[str] | None = None          # the raw sample of each row's image: captions of one image share
    #   it, so zero-shot retrieval counts the image once (COCO: five captions); None = one image per row

    # text stream
    input_ids: Tensor | None = None              # [B, T] WordPiece ids with [CLS] ... [SEP], 0 = [PAD]
    text_mask: Tensor | None = None              # [B, T] real tokens

    # visual stream: detector regions ...
    region_feats: Tensor | None = None           # [B, R, D] float; masked regions are zeroed (UNITER §3.2)
    region_loc: Tensor | None = None             # [B, R, 7] UNITER or [B, R, 5] mu-VLA location
    region_mask: Tensor | None = None            # [B, R] real regions
    # ... or raw pixels for patch models (UNIMO-2, VLMo: 224 px, 16 x 16 patches)
    pixels: Tensor | None = None                 # [B, 3, H, W] normalised
    image_mask: Tensor | None = None             # [B] the sample has an image (patch models)

    # targets of the objectives (None when the batch's task does not train them)
    mlm_labels: Tensor | None = None             # [B, T] original ids at masked positions (MLM, UNITER/UNIMO)
    lm_labels: Tensor | None = None              # [B, T] next-fragment targets (UNIMO seq2seq LM)
    #   lm_labels[b, t] is the target token AT t (-100 elsewhere); the model's output at t - 1 predicts it
    #   (the objective shifts, as Hugging Face causal LMs do). [model-objectives]
    attention_pattern: Tensor | None = None      # [B, L, L] who attends to whom (seq2seq), L = T + visual length
    #   bool, row = query, column = key, True = may attend; positions: the T text tokens, then the R regions
    #   (or the patches); the model's [IMG] token shares the first visual position's row and column. [model-objectives]
    region_masked: Tensor | None = None          # [B, R] regions masked for MRFR / MRC / p-MRTC
    region_feat_targets: Tensor | None = None    # [B, R, D] the features before masking (MRFR)
    region_class_targets: Tensor | None = None   # [B, R, C] detector class distributions (MRC, MRC-kl)
    region_token_targets: Tensor | None = None   # [B, R, P] linked phrase's sub-word ids (mu-VLA p-MRTC)
    itm_labels: Tensor | None = None             # [B] 1 = the text belongs to the image, 0 = swapped (ITM)
    sample_weights: Tensor | None = None         # [B] per-sample loss weights (mu-VLA §3.4)

    # CMCL (UNIMO §2.1, eq. 6-7): extra samples encoded on their own, each owned by one anchor sample
    positives: Batch | None = None               # back-translations, related images, related texts
    negatives: Batch | None = None               # scene-graph and TF-IDF rewrites
    owner: Tensor | None = None                  # [M] in a positives/negatives batch: index of its anchor

    extra: dict[str, Any] = field(default_factory=dict)  # anything task-specific not listed above

    def __len__(self) -> int:
        return len(self.keys)

    def tensors(self) -> dict[str, Tensor]:
        """The tensor fields that are set, by name (sub-batches not included)."""
        return {f.name: v for f in fields(self)
                if (v := getattr(self, f.name)) is not None and hasattr(v, "device")}

    def num_units(self) -> int:
        """Input units (UNITER App. A.2): real text tokens + real regions or image patches."""
        units = 0
        if self.text_mask is not None:
            units += int(self.text_mask.sum())
        if self.region_mask is not None:
            units += int(self.region_mask.sum())
        if self.pixels is not None and self.image_mask is not None:
            patches = (self.pixels.shape[-2] // 16) * (self.pixels.shape[-1] // 16)
            units += int(self.image_mask.sum()) * patches
        return units

    def to(self, device: Any, non_blocking: bool = False) -> Batch:
        """A copy with every tensor (and sub-batch) on ``device``."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Batch) or hasattr(value, "device"):
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return Batch(**moved)
