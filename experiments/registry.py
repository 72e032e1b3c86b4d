"""The catalogue of experiments: name, one-line summary and the module that holds each one's code.

The catalogue is declared here as plain data and imports no experiment module: ``python -m experiments list`` and
``--help`` stay fast (no torch, no matplotlib), and a module is imported by :func:`load` only when its experiment
runs. Each module lists its :class:`~experiments.experiment.Experiment` objects in a module-level ``EXPERIMENTS``;
``tests/test_cli.py`` checks that the two agree.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from experiments.experiment import Experiment


@dataclass(frozen=True)
class Entry:
    """One line of the catalogue: what ``python -m experiments list`` shows, and where the code lives."""

    name: str
    summary: str
    module: str


_ENTRIES = (
    Entry("ot-targets", "Expected OT targets q_i vs p_i (exact, closed form, MC) and their cost (paper 000, [0105])",
          "experiments.ot_targets"),
    Entry("popalign-toy", "PopAlign vs SFT on the 1-D Gaussian mixture, both parameterisations (paper 001, Fig. 3)",
          "experiments.popalign_toy"),
    Entry("popalign-toy-targets", "PopAlign for targets 50/50 .. 95/5 (paper 001, Fig. 11)", "experiments.popalign_toy"),
    Entry("popalign-toy-beta", "PopAlign beta sweep: distance from the reference (paper 001, Fig. 12)",
          "experiments.popalign_toy"),
    Entry("popalign-toy-alpha", "PopAlign alpha sweep of the normaliser mu (paper 001, Fig. 13)",
          "experiments.popalign_toy"),
    Entry("popalign-toy-cfg", "PopAlign on a prompt-conditioned mixture: alpha of mu (paper 001, Table 4) and "
                              "classifier-free guidance scale (paper 001, Fig. 6)", "experiments.popalign_toy_cfg"),
    Entry("dft-eq9", "Eq. 9 (A_t, B_t) against autograd through DDPM/DDIM chains, float64 (paper 000)",
          "experiments.dft_eq9"),
    Entry("dft-bt-scale", "Scale of R A_t B_t g_t vs R A_t g_t vs R g_t over t, toys and a digits-trained "
                          "diffusers UNet (paper 000, Fig. 6b)", "experiments.dft_bt_scale"),
    Entry("dft-training", "Finetuning through the sampler: exact vs adjusted vs unstandardised gradients under Adam and SGD, "
                          "1000 iterations (paper 000, Fig. 6a)",
          "experiments.dft_training"),
    Entry("dft-dal-toy", "DAL + adjusted DFT on a prompt-conditioned mixture, targets 50/50 and 75/25 (paper 000)",
          "experiments.dft_dal_toy"),
    Entry("dft-dal-toy-prompts", "Share of the minority attribute per prompt before/after the conditional DAL + aDFT "
                                 "toward 75/25 on a 10-prompt toy (paper 000, Fig. 9)", "experiments.dft_dal_toy_prompts"),
    Entry("dft-dal-toy-components", "Soft prompt vs LoRA (text encoder / U-Net / both) vs full finetune with the DAL + "
                                    "aDFT on the 10-prompt toy: bias and content kept (paper 000, Table 1)",
          "experiments.dft_dal_toy_components"),
    Entry("dft-coefficients", "Adjusted-gradient C_i: Algorithm A.1's DDPM 1/A_{t_i} vs the sampler's own, over DDIM / "
                              "DPM-Solver++ steps and in toy finetuning under Adam and SGD (paper 000, Alg. A.1)",
          "experiments.dft_coefficients"),
    Entry("dft-gradient-paths", "Gradient paths of exact vs adjusted DFT read off autograd's graph of a 3-step DDIM "
                                "chain (paper 000, Fig. 7)", "experiments.dft_gradient_paths"),
    Entry("dft-compare", "SFT vs PopAlign vs DAL + aDFT on the PopAlign 1-D mixture toy: discrepancy and unrelated mass",
          "experiments.dft_compare"),
    Entry("bbb-bound", "Path-KL/Pinsker TV bound vs exact TV between generations over embedding distance (paper 003)",
          "experiments.bbb_bound"),
    Entry("bbb-chain", "Biased embedding -> imbalanced generations, balanced -> balanced, with the corollary's bound "
                       "(paper 003)", "experiments.bbb_chain"),
    Entry("bbb-audit", "Biased alignment scorer ranks a biased generator first; subclass-score / average-then-score "
                       "(paper 003)", "experiments.bbb_audit"),
    Entry("bbb-real-embeddings", "Gender bias of real text encoders for ~150 professions, neutral vs "
                                 "average-then-score (paper 003)", "experiments.bbb_real_embeddings"),
    Entry("gmm-toy", "GAMMA-FACE on an exact 1-D DDPM: BIC-chosen GMM on x_t, uniform component sampling vs plain "
                     "(paper 002)", "experiments.gmm_toy"),
    Entry("gmm-digits", "GAMMA-FACE on a CPU-trained digits DDPM (80/20 over A_p): BIC, balance plain vs GMM, "
                        "downstream table", "experiments.gmm_digits"),
    Entry("gmm-celebahq", "GAMMA-FACE on google/ddpm-celebahq-256 (FAIRDIFF_CELEBAHQ): PCA + BIC-chosen GMM on x_t, "
                          "equal component samples", "experiments.gmm_celebahq"),
    Entry("testbed-train", "The testbed: a Stable Diffusion-architecture model trained here on coloured digits "
                           "(committed; --retrain trains it anew): size, training time, loss, classifiers",
          "experiments.testbed"),
    Entry("testbed-bias", "The testbed's learned ink bias measured by the evaluation job, per prompt, training vs "
                          "held-out prompts, at guidance 1/3/5/7.5 (paper 000 [0124])", "experiments.testbed"),
    Entry("testbed-methods", "Every method on the testbed (aDFT parts, PopAlign, SFT, prompt augmentation, semantic "
                             "guidance): bias on training / held-out prompts, content kept, cost, 3 seeds (papers "
                             "000, 001)", "experiments.testbed_methods"),
    Entry("sd-eval", "Bias evaluation of a Stable Diffusion pipeline (tiny random models with --quick) and the "
                     "real-photo face + gender check (paper 000 [0124], paper 001 eq. 11)", "experiments.sd_eval"),
    Entry("adft-sd", "aDFT job (DAL + adjusted gradient, paper 000 Alg. A.1) end to end on tiny random SD: kill, "
                     "resume, evaluate, class frequency vs iterations", "experiments.adft_sd"),
    Entry("popalign-sd", "PopAlign on Stable Diffusion: preference data, sanity filter, sets, LoRA training + resume, "
                         "SFT, evaluation (paper 001)", "experiments.popalign_sd"),
)

EXPERIMENTS: dict[str, Entry] = {entry.name: entry for entry in _ENTRIES}


def load(name: str) -> Experiment:
    """Import the module of experiment ``name`` and return its :class:`~experiments.experiment.Experiment`."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(EXPERIMENTS))}")
    module = importlib.import_module(EXPERIMENTS[name].module)
    for experiment in getattr(module, "EXPERIMENTS", ()):
        if experiment.name == name:
            return experiment
    raise LookupError(f"the catalogue places {name!r} in {EXPERIMENTS[name].module}, whose EXPERIMENTS does not "
                      f"define it")
