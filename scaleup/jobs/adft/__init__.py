"""aDFT of Stable Diffusion: the DAL and the adjusted sampler gradient of seed 000 ([0104]-[0135], Algorithm A.1).

``accelerate launch -m scaleup.jobs.adft --preset gender --config cfg.yaml``; modules: :mod:`.config` (settings,
presets, checks), :mod:`.components` (models), :mod:`.batch` (what an iteration draws), :mod:`.targets` (the whole
batch's DAL targets), :mod:`.step` (one iteration), :mod:`.export` (weights, held-out evaluation), :mod:`.job` (the
run), :mod:`.profiling` (the benchmark's per-component timer).
"""
