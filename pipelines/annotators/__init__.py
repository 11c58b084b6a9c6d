"""Pure annotation logic (detection, parsing, rewriting) that the Beam stages in pipelines/stages/ call."""
