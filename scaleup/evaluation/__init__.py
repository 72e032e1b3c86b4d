"""Bias evaluation of text-to-image pipelines: generate, find faces, classify, score (seed 000 [0124], seed 001 eq. 11)."""
