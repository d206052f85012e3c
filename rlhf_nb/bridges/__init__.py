"""Bridges from rlhf_nb's RunConfig to other RL libraries (optional extras; each imports its library lazily)."""
