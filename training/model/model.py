"""The single-stream model: one transformer over text tokens, the ``[IMG]`` token and regions or patches.

Sequence layout (positions of ``ModelOutput.hidden``): ``T`` text tokens (``[CLS] ... [SEP]``), then the
``[IMG]`` token, then the ``V`` regions or patches; UNIMO-2 grounded tokens, when enabled, follow. An absent
stream (no tensor in the batch, or an all-False mask for a sample) is hidden from attention (UNIMO App. A),
so an image-only or text-only sample is encoded on its own. ``Batch.attention_pattern`` (seq2seq LM) covers
the ``T + V`` text and visual positions; ``[IMG]`` shares the first visual position's row and column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from schemas.batch import Batch
from training.model.config import ModelConfig
from training.model.embeddings import PatchEmbedder, RegionEmbedder, TextEmbedder
from training.model.encoder import Layer, Route
from training.model.inputs import has_image

Streams = Literal["both", "text", "image"]
TEXT, VISUAL, GROUNDED = 0, 1, 2


@dataclass
class ModelOutput:
    hidden: Tensor  # [B, L, H] last layer
    mask: Tensor  # [B, L] real positions
    text_len: int  # T (0 without a text stream)
    visual_len: int  # 1 + V: [IMG] + regions/patches (0 without a visual stream)
    grounding: dict[str, Tensor] | None = None  # UNIMO-2 §3.1 inputs of the grounding loss

    @property
    def text(self) -> Tensor:
        """``[B, T, H]`` contextual text tokens, aligned with ``input_ids``."""
        return self.hidden[:, :self.text_len]

    @property
    def text_cls(self) -> Tensor:
        if not self.text_len:
            raise ValueError("the batch was encoded without a text stream")
        return self.hidden[:, 0]

    @property
    def image_cls(self) -> Tensor:
        if not self.visual_len:
            raise ValueError("the batch was encoded without a visual stream")
        return self.hidden[:, self.text_len]

    @property
    def visual(self) -> Tensor:
        """``[B, V, H]`` contextual regions or patches, aligned with ``region_feats`` / ``region_mask``."""
        return self.hidden[:, self.text_len + 1:self.text_len + self.visual_len]


class UnifiedModel(nn.Module):
    """Embedders, the encoder, and the heads every objective reads (BERT prediction heads, ITM, ITC)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.embeddings = TextEmbedder(cfg)
        self.visual_embeddings = RegionEmbedder(cfg) if cfg.visual.kind == "regions" else PatchEmbedder(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        # BERT's MLM head (transform + decoder tied to the word embeddings): MLM, seq2seq LM, p-MRTC
        self.lm_transform = _transform(cfg)
        self.lm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        # region heads (UNITER §3.2): MRFR regression, MRC classification
        self.region_transform = _transform(cfg)
        self.region_feat_head = nn.Linear(h, cfg.visual.region_feat_dim)
        self.region_class_head = nn.Linear(h, cfg.output_heads.region_classes)
        # ITM: BERT pooler + a 2-way classifier on [CLS] (UNITER §3.2)
        self.pooler = nn.Linear(h, h)
        self.itm_head = nn.Linear(h, 2)
        # ITC dual-encoder projections and learned temperature (VLMo §3.3)
        self.text_proj = nn.Linear(h, cfg.output_heads.projection_dim)
        self.image_proj = nn.Linear(h, cfg.output_heads.projection_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.output_heads.temperature)))
        if cfg.dictionary.enabled:  # UNIMO-2 §3.1
            # entries on the scale of the (layer-normed) hidden states they quantise, and eta = 1/sqrt(H) so
            # eta v.g starts near unit variance (scaled dot product); at 0.02 the entries took thousands of
            # steps to reach the features while the encoder drifted (measured on the tiny test model)
            self.dictionary = nn.Parameter(torch.randn(cfg.dictionary.size, h))
            self.dictionary_eta = nn.Parameter(torch.tensor(h ** -0.5))
            self.grounded_type = nn.Parameter(torch.zeros(h))
        self.apply(_init_weights)

    # ---- encoding ----------------------------------------------------------------------------------
    def forward(self, batch: Batch, streams: Streams = "both") -> ModelOutput:
        """Encode ``batch``; ``streams`` = "text" or "image" is the dual-encoder view (the other stream is
        not fed at all; MoME then uses only the L or V expert, VLMo §3.2)."""
        parts, masks, kinds = [], [], []
        text_len = visual_len = 0
        if streams != "image" and batch.input_ids is not None:
            if batch.text_mask is None:
                raise ValueError("batch.input_ids is set but batch.text_mask is not")
            parts.append(self.embeddings(batch.input_ids))
            masks.append(batch.text_mask.bool())
            text_len = batch.input_ids.shape[1]
        present = has_image(batch) if streams != "text" else None
        if present is not None:
            if self.cfg.visual.kind == "regions":
                if batch.region_feats is None:
                    raise ValueError("model.visual.kind is regions but the batch carries pixels, not region_feats")
                emb = self.visual_embeddings(batch.region_feats, batch.region_loc)
                visual_mask = batch.region_mask.bool()
            else:
                if batch.pixels is None:
                    raise ValueError("model.visual.kind is patches but the batch carries region_feats, not pixels")
                emb = self.visual_embeddings(batch.pixels)
                visual_mask = present[:, None].expand(-1, emb.shape[1] - 1)
            parts.append(emb.to(parts[0].dtype) if parts else emb)
            masks.append(torch.cat([present[:, None], visual_mask], dim=1))
            visual_len = emb.shape[1]
        if not parts:
            what = "stream" if streams == "both" else streams
            raise ValueError(f"batch of task {batch.task!r} has no {what} to encode")
        x = torch.cat(parts, dim=1)
        mask = torch.cat(masks, dim=1)
        pattern = self._pattern(batch, text_len, visual_len)
        kinds = torch.cat([torch.full((text_len,), TEXT), torch.full((visual_len,), VISUAL)]).to(x.device)

        grounding = None
        cut = self.cfg.dictionary.layer if self.cfg.dictionary.enabled else len(self.layers)
        attn = _attention_mask(mask, pattern, kinds if self.cfg.dictionary.enabled else None)
        for i, layer in enumerate(self.layers[:cut]):
            x = layer(x, attn, self._routes(i, text_len, visual_len))
        if self.cfg.dictionary.enabled:
            x, mask, kinds, grounding = self._ground(x, mask, kinds)
            if pattern is not None:
                pattern = F.pad(pattern, (0, x.shape[1] - pattern.shape[1], 0, x.shape[1] - pattern.shape[1]),
                                value=True)
            attn = _attention_mask(mask, pattern, kinds)
            for layer in self.layers[cut:]:
                x = layer(x, attn, [("shared", slice(None))])
        return ModelOutput(hidden=x, mask=mask, text_len=text_len, visual_len=visual_len, grounding=grounding)

    def _routes(self, layer: int, text_len: int, visual_len: int) -> list[Route]:
        if not self.cfg.mome.enabled:
            return [("shared", slice(None))]
        if text_len and visual_len:
            if layer >= len(self.layers) - self.cfg.mome.vl_layers:
                return [("vl", slice(None))]
            return [("l", slice(0, text_len)), ("v", slice(text_len, None))]
        return [("l" if text_len else "v", slice(None))]

    def _pattern(self, batch: Batch, text_len: int, visual_len: int) -> Tensor | None:
        """``Batch.attention_pattern`` over the positions fed, with the ``[IMG]`` row and column added."""
        pattern = batch.attention_pattern
        if pattern is None:
            return None
        full_text = batch.input_ids.shape[1] if batch.input_ids is not None else 0
        visual = self._visual_count(batch)
        if pattern.shape[-1] != full_text + visual or pattern.shape[-2] != full_text + visual:
            raise ValueError(f"batch.attention_pattern is {tuple(pattern.shape[1:])}; the batch has {full_text} "
                             f"text + {visual} visual positions")
        index = list(range(text_len))
        if visual_len:
            index += [full_text] + list(range(full_text, full_text + visual))
        index = torch.tensor(index, device=pattern.device)
        return pattern.bool()[:, index][:, :, index]

    def _visual_count(self, batch: Batch) -> int:
        if batch.region_feats is not None:
            return batch.region_feats.shape[1]
        if batch.pixels is not None:
            return self.cfg.visual.num_patches
        return 0

    def _ground(self, x: Tensor, mask: Tensor, kinds: Tensor):
        """UNIMO-2 §3.1: score every dictionary entry by sigma(eta v.g) summed over real positions, append the
        top-K entries as grounded tokens."""
        scores = torch.sigmoid(self.dictionary_eta * x @ self.dictionary.t())  # [B, L, C]
        accumulated = (scores * mask[..., None]).sum(dim=1)  # [B, C]
        indices = accumulated.topk(self.cfg.dictionary.top_k, dim=1).indices  # [B, K]
        tokens = self.dictionary[indices] + self.grounded_type
        grounding = {"features": x, "mask": mask, "scores": scores, "indices": indices,
                     "dictionary": self.dictionary}
        k = indices.shape[1]
        x = torch.cat([x, tokens.to(x.dtype)], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], k)], dim=1)
        kinds = torch.cat([kinds, kinds.new_full((k,), GROUNDED)])
        return x, mask, kinds, grounding

    # ---- heads -------------------------------------------------------------------------------------
    def vocab_logits(self, hidden: Tensor) -> Tensor:
        """BERT MLM head, decoder tied to the word embeddings: MLM, seq2seq LM, p-MRTC."""
        return self.lm_transform(hidden) @ self.embeddings.word_embeddings.weight.t() + self.lm_bias

    def region_features(self, hidden: Tensor) -> Tensor:
        return self.region_feat_head(self.region_transform(hidden))

    def region_class_logits(self, hidden: Tensor) -> Tensor:
        return self.region_class_head(self.region_transform(hidden))

    def itm_logits(self, output: ModelOutput) -> Tensor:
        """``[B, 2]`` (not matched, matched) from the pooled ``[CLS]``."""
        return self.itm_head(torch.tanh(self.pooler(output.text_cls)))

    def embed_text(self, batch: Batch) -> Tensor:
        """Dual-encoder text vector: projected, L2-normalised ``[CLS]`` of the text encoded alone (VLMo §3.3)."""
        return F.normalize(self.text_proj(self(batch, streams="text").text_cls), dim=-1)

    def embed_image(self, batch: Batch) -> Tensor:
        """Dual-encoder image vector: projected, L2-normalised ``[IMG]`` of the image encoded alone."""
        return F.normalize(self.image_proj(self(batch, streams="image").image_cls), dim=-1)

    def temperature_scale(self) -> Tensor:
        """``1 / sigma`` of VLMo §3.3, learned as a log, clamped at 100 (CLIP)."""
        return self.logit_scale.clamp(max=math.log(100)).exp()


def _attention_mask(mask: Tensor, pattern: Tensor | None, kinds: Tensor | None) -> Tensor | None:
    """Bool ``[B, 1, L, L]`` (or ``[B, 1, 1, L]`` for key padding only, None without any): True = may attend.

    ``kinds`` (UNIMO-2 Grounded Transformer): text and visual positions see their own stream and the
    grounded tokens only. Every position may attend to itself, so no row is empty (no NaN from softmax)."""
    keys = mask[:, None, None, :]
    if pattern is None and kinds is None:
        return None if bool(mask.all()) else keys  # no mask at all lets SDPA take its fastest kernel
    allowed = keys.expand(-1, 1, mask.shape[1], -1)
    if pattern is not None:
        allowed = allowed & pattern[:, None]
    if kinds is not None:
        same = (kinds[:, None] == kinds[None, :]) | (kinds[:, None] == GROUNDED) | (kinds[None, :] == GROUNDED)
        allowed = allowed & same
    return allowed | torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)


def _transform(cfg: ModelConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps))


def _init_weights(module: nn.Module) -> None:
    """BERT initialisation: normal(0, 0.02) weights, zero biases, unit layer norms."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_model(cfg: ModelConfig | dict[str, Any]) -> UnifiedModel:
    """The model for ``cfg`` (validated), with the text side loaded from ``cfg.init_from`` when set."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    cfg.validate()
    if cfg.init_from:
        from training.model.pretrained import check_sizes, load_text_weights
        check_sizes(cfg, cfg.init_from)
    model = UnifiedModel(cfg)
    if cfg.init_from:
        load_text_weights(model, cfg.init_from)
    return model
