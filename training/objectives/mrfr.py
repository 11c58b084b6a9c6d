"""MRFR: masked region feature regression (UNITER §3.2; mu-VLA §3.3.1): L2 from a masked region's output,
through a FC layer, to its feature before masking, ``||h(v_m) - r(v_m)||_2^2`` summed over dimensions."""

from __future__ import annotations

from training.objectives.base import Objective, ObjectiveResult, other_modality_masked, register, require, weighted_mean


@register
class MRFR(Objective):
    name = "mrfr"

    def forward(self, model, batch, outputs):
        if (skip := other_modality_masked(batch, outputs, "region_masked", "mlm_labels")) is not None:
            return skip
        require(batch, self.name, "region_masked", "region_feat_targets")
        sample, region = batch.region_masked.nonzero(as_tuple=True)
        predicted = model.region_features(outputs.visual[sample, region]).float()
        squared = (predicted - batch.region_feat_targets[sample, region].float()).pow(2).sum(-1)
        return ObjectiveResult(weighted_mean(squared, sample, batch.sample_weights),
                               {"targets": float(sample.numel())})
