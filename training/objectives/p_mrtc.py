"""p-MRTC: phrase-guided masked region-to-token classification (mu-VLA §3.3.2).

A masked region linked to a noun phrase is classified into that phrase's sub-word tokens in the BERT
vocabulary, through the MLM head (tied to the word embeddings). With several sub-words the target is the
uniform distribution over them: the loss is the mean of ``-log p(token)`` over the phrase's tokens.
"""

from __future__ import annotations

from schemas.batch import IGNORE_INDEX
from training.objectives.base import Objective, ObjectiveResult, other_modality_masked, register, require, weighted_mean


@register
class PMRTC(Objective):
    name = "p_mrtc"

    def forward(self, model, batch, outputs):
        if (skip := other_modality_masked(batch, outputs, "region_masked", "mlm_labels")) is not None:
            return skip
        require(batch, self.name, "region_masked", "region_token_targets")
        targets = batch.region_token_targets
        linked = batch.region_masked & (targets != IGNORE_INDEX).any(-1)
        sample, region = linked.nonzero(as_tuple=True)
        log_probs = model.vocab_logits(outputs.visual[sample, region]).float().log_softmax(-1)
        tokens = targets[sample, region]  # [N, P]
        valid = tokens != IGNORE_INDEX
        picked = log_probs.gather(1, tokens.clamp_min(0)) * valid
        per_region = -picked.sum(-1) / valid.sum(-1).clamp_min(1)
        hit = (log_probs.argmax(-1, keepdim=True) == tokens).any(-1).float()
        return ObjectiveResult(weighted_mean(per_region, sample, batch.sample_weights),
                               {"accuracy": float(hit.mean()) if hit.numel() else 0.0,
                                "targets": float(sample.numel())})
