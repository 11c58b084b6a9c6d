"""Every seed's pre-training objectives, one module each, registered by name (the keys configs use)."""

from training.objectives import cmcl, grounded_dictionary, itc, itm, mlm, mrc, mrfr, p_mrtc, seq2seq, wra  # noqa: F401
from training.objectives.base import OBJECTIVES, Objective, ObjectiveResult, build_objectives, run_objectives

__all__ = ["OBJECTIVES", "Objective", "ObjectiveResult", "build_objectives", "run_objectives"]
