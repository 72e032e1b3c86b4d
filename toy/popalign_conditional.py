"""A prompt-conditioned PopAlign toy, so that classifier-free guidance is defined (seed 001, App. A.1 Fig. 6 and
App. A.3 Table 4).

The mixture of :mod:`toy.popalign_toy` (components G1, G2, G3 at -7, 0, 7, stds 1) with one set of component logits
per prompt and means and stds shared by every prompt, as a text-to-image UNet shares its weights across prompts:

- ``"person"``, an identity-neutral human prompt: logits (1, -3, -1), so the sensitive classes G1/G3 are skewed
  0.881 / 0.119 (the toy's reference skew) and unrelated G2 content is rare (weight 0.016);
- ``"empty, balanced"``: the unconditional branch of guidance with G1/G3 balanced and half its mass on G2 (a marginal
  over many prompts whose bias averages out);
- ``"empty, biased"``: the unconditional branch with the person prompt's G1/G3 skew (a marginal as biased as the
  prompt).

PopAlign and SFT train on the person prompt's preference data only (:func:`toy.popalign_toy.preference_data`), so the
two empty prompts keep their logits and change only through the shared means and stds; which of the two the
finetuned model's unconditional branch resembles is exactly what the toy cannot decide for SDXL, so both are
evaluated. :class:`PromptView` exposes one prompt as a :class:`~toy.gaussian_mixture.GaussianMixture1D`, so the toy's
training, sampling and summaries apply to it unchanged; guidance is :func:`theory.guidance.classifier_free_guidance`.
"""

from __future__ import annotations

import torch

from theory.ddpm import ddpm_sample
from theory.guidance import classifier_free_guidance
from theory.schedules import linear_betas
from toy.gaussian_mixture import GaussianMixture1D
from toy.popalign_toy import G1, G2, G3, REFERENCE_MEANS, REFERENCE_STDS

PROMPTS = ("person", "empty, balanced", "empty, biased")
PERSON, EMPTY_BALANCED, EMPTY_BIASED = range(3)
EMPTY = {"balanced": EMPTY_BALANCED, "biased": EMPTY_BIASED}

_PERSON_LOGITS = (1.0, -3.0, -1.0)


def reference_logits() -> torch.Tensor:
    """(P, C) component logits of the reference per prompt (module docstring), float64."""
    person = torch.tensor(_PERSON_LOGITS, dtype=torch.float64)
    w = torch.softmax(person, 0)
    g1_share = float(w[G1] / (w[G1] + w[G3]))
    balanced = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    biased = torch.tensor([0.5 * g1_share, 0.5, 0.5 * (1 - g1_share)], dtype=torch.float64)
    return torch.stack([person, balanced.log(), biased.log()])


class ConditionalMixture1D(torch.nn.Module):
    """R runs of a mixture with per-prompt logits (R, P, C) and shared means and log-stds (R, C) (module docstring)."""

    def __init__(self, logits: torch.Tensor, means, stds, *, n_runs: int = 1):
        super().__init__()
        logits = torch.as_tensor(logits, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if logits.ndim != 2 or means.shape != stds.shape != (logits.shape[1],):
            raise ValueError(f"logits must be (P, C) with means and stds (C,); got {tuple(logits.shape)}, "
                             f"{tuple(means.shape)}, {tuple(stds.shape)}")
        self.logits = torch.nn.Parameter(logits.expand(n_runs, -1, -1).clone())
        self.means = torch.nn.Parameter(means.expand(n_runs, -1).clone())
        self.log_stds = torch.nn.Parameter(stds.log().expand(n_runs, -1).clone())

    def prompt(self, index: int) -> PromptView:
        """Prompt ``index`` of :data:`PROMPTS` as a batch of R 1-D mixtures sharing this model's parameters."""
        if not 0 <= index < self.logits.shape[1]:
            raise ValueError(f"prompt index must lie in [0, {self.logits.shape[1]}); got {index!r}")
        return PromptView(self, index)


def stack_runs(models: list[ConditionalMixture1D]) -> ConditionalMixture1D:
    """The runs of several models as one batch (a copy without gradient), to sample them in one tensor program."""
    with torch.no_grad():
        out = conditional_reference(1)
        out.logits = torch.nn.Parameter(torch.cat([m.logits.detach() for m in models]))
        out.means = torch.nn.Parameter(torch.cat([m.means.detach() for m in models]))
        out.log_stds = torch.nn.Parameter(torch.cat([m.log_stds.detach() for m in models]))
    return out.requires_grad_(False)


def conditional_reference(n_runs: int = 1) -> ConditionalMixture1D:
    """The reference of the conditional toy (module docstring), repeated for ``n_runs`` runs."""
    return ConditionalMixture1D(reference_logits(), REFERENCE_MEANS, REFERENCE_STDS, n_runs=n_runs)


class PromptView(GaussianMixture1D):
    """One prompt of a :class:`ConditionalMixture1D` seen as a :class:`~toy.gaussian_mixture.GaussianMixture1D`.

    Densities, posteriors, noise predictions and samples are the mixture's own methods, read through this prompt's
    logits and the shared means and stds; ``parameters()`` are the whole model's, so training one prompt moves the
    shared parameters of every prompt (the other prompts' logits receive no gradient and stay as they are).
    """

    def __init__(self, model: ConditionalMixture1D, index: int):
        torch.nn.Module.__init__(self)  # the parameters live in ``model``, not here
        self.conditional = model
        self.index = index

    @property
    def logits(self) -> torch.Tensor:
        return self.conditional.logits[:, self.index]

    @property
    def means(self) -> torch.Tensor:
        return self.conditional.means

    @property
    def log_stds(self) -> torch.Tensor:
        return self.conditional.log_stds


def person_model(n_runs: int) -> PromptView:
    """A fresh conditional reference's person prompt, the mixture PopAlign and SFT train (for :func:`sweep`)."""
    return conditional_reference(n_runs).prompt(PERSON)


def guided_samples(model: ConditionalMixture1D, empty: int, scale: float, n: int, *, generator: torch.Generator,
                   diffusion_steps: int = 1000) -> torch.Tensor:
    """n samples per run of the person prompt under classifier-free guidance with scale w, shape (R, n).

    The DDPM ancestral chain (:func:`theory.ddpm.ddpm_sample`, T linear betas) driven by
    eps_empty + w (eps_person - eps_empty) (:func:`theory.guidance.classifier_free_guidance`), ``empty`` the prompt
    index of the unconditional branch.
    """
    cond, uncond = model.prompt(PERSON), model.prompt(empty)

    def eps(x: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        return classifier_free_guidance(uncond.noise_prediction(x, abar), cond.noise_prediction(x, abar), scale)

    z_T = torch.randn(model.logits.shape[0], n, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        return ddpm_sample(eps, z_T, linear_betas(diffusion_steps), generator)


def classify(x: torch.Tensor) -> torch.Tensor:
    """The class G1, G2 or G3 of each sample: the nearest reference component (equal weights, equal stds: the attribute
    classifier of the toy, blind to the model's weights)."""
    means = torch.tensor(REFERENCE_MEANS, dtype=x.dtype)
    return (x.unsqueeze(-1) - means).abs().argmin(dim=-1)


__all__ = ["EMPTY", "EMPTY_BALANCED", "EMPTY_BIASED", "G1", "G2", "G3", "PERSON", "PROMPTS", "ConditionalMixture1D",
           "PromptView", "classify", "conditional_reference", "guided_samples", "person_model", "reference_logits",
           "stack_runs"]
