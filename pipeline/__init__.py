"""The AgentRefine pipeline, the domain layer: where personas come from, the stages (script,
trajectory) with their prompts and verification rules, the sample they work on, and the
stage registry that names them all once."""
