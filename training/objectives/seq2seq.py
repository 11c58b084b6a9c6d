"""Seq2seq LM (UNIMO §2.3): target fragments generated left to right from the source and the image.

``lm_labels[b, t]`` is the target token at position ``t`` (-100 outside the target fragments); the output at
``t - 1`` predicts it (the objective shifts, as Hugging Face causal LMs do). ``attention_pattern`` (from the
collator) lets a target position see the source, the image and the earlier target positions only.
"""

from __future__ import annotations

from training.objectives.base import (
    Objective,
    classified,
    register,
    require,
    token_targets,
)


@register
class Seq2SeqLM(Objective):
    name = "seq2seq"

    def forward(self, model, batch, outputs):
        require(batch, self.name, "lm_labels", "attention_pattern")
        sample, position = token_targets(batch.lm_labels[:, 1:])
        logits = model.vocab_logits(outputs.text[sample, position])
        targets = batch.lm_labels[sample, position + 1]
        return classified(logits, targets, sample, batch.sample_weights)
