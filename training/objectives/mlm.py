"""MLM: masked language modelling conditioned on the image (UNITER §3.2; UNIMO §2.3; mu-VLA §3.3).

The collator chooses the positions (15 %, 80/10/10; UNIMO whole phrases and Geo(0.2) spans; mu-VLA linked
phrases) and puts the original ids in ``mlm_labels``; the loss is the same cross entropy for every variant.
"""

from __future__ import annotations

from training.objectives.base import (
    Objective,
    classified,
    other_modality_masked,
    register,
    require,
    token_targets,
)


@register
class MLM(Objective):
    name = "mlm"

    def forward(self, model, batch, outputs):
        if (skip := other_modality_masked(batch, outputs, "mlm_labels", "region_masked")) is not None:
            return skip
        require(batch, self.name, "mlm_labels")
        sample, position = token_targets(batch.mlm_labels)
        logits = model.vocab_logits(outputs.text[sample, position])
        targets = batch.mlm_labels[sample, position]
        return classified(logits, targets, sample, batch.sample_weights)
