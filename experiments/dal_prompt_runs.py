"""One DAL + adjusted-DFT run on the multi-prompt toy (:mod:`toy.prompt_mixture`), shared by ``dft-dal-toy-prompts``
(seed 000 Fig. 9) and ``dft-dal-toy-components`` (seed 000 Table 1): the occupations, training, and the per-prompt
evaluation of the original and the finetuned model on the same initial noise."""

from __future__ import annotations

import numpy as np
import torch

from theory.dal import dal_loss
from theory.metrics import frequency_bias
from theory.sampler_gradient import AdjustedGradient, run_sampler
from toy.prompt_mixture import (
    PromptConditionedMixture,
    attribute_mass,
    content_class,
    occupation_logits,
    prepare_finetuning,
)
from toy.sampler_chain import Sampler, eps_model_for, finetune


def occupations(n: int, minority_range: tuple[float, float], content_range: tuple[float, float]) -> dict:
    """P = ``n`` "occupations": the original share of attribute 1 rises evenly over ``minority_range`` (sorted, so a
    bar chart has the shape of seed 000 Fig. 9's curve), the share of content 0 falls over ``content_range``."""
    return {"minority_share": np.linspace(*minority_range, n).tolist(),
            "content0_share": np.linspace(*content_range, n)[::-1].tolist(),
            "names": [f"occ. {p + 1}" for p in range(n)]}


def build_model(prompts: dict, width: int, seed: int) -> PromptConditionedMixture:
    return PromptConditionedMixture(occupation_logits(np.array(prompts["minority_share"]),
                                                      np.array(prompts["content0_share"])), width=width, seed=seed)


def generate(model: PromptConditionedMixture, sampler: Sampler, z_T: torch.Tensor, prompt_ids: torch.Tensor) -> torch.Tensor:
    """z_0 from z_T, row i with prompt ``prompt_ids[i]`` (no gradient)."""
    model.condition(prompt_ids)
    with torch.no_grad():
        return run_sampler(eps_model_for(model, sampler), z_T, sampler.step, sampler.n_steps, AdjustedGradient("exact"))


def per_prompt_shares(model: PromptConditionedMixture, z0: torch.Tensor, prompt_ids: torch.Tensor) -> dict:
    """Per prompt: the classified share of attribute 1, of content 0, of attribute 1 within each content type
    (what the conditional DAL aligns), the seed-000 bias (theory.metrics.frequency_bias) of the attribute, and the
    model's own attribute-1 weight."""
    attribute = model.attribute_logits(z0).argmax(1)
    content = content_class(z0)
    out = {"attribute1": [], "content0": [], "attribute1_in_content": [], "bias": []}
    for p in range(model.n_prompts):
        a, c = attribute[prompt_ids == p], content[prompt_ids == p]
        share = float((a == 1).double().mean())
        out["attribute1"].append(share)
        out["content0"].append(float((c == 0).double().mean()))
        out["attribute1_in_content"].append([float((a[c == k] == 1).double().mean()) if bool((c == k).any())
                                             else float("nan") for k in (0, 1)])
        out["bias"].append(frequency_bias([1 - share, share]))
    with torch.no_grad():
        out["attribute1_mass"] = attribute_mass(model.weights(), 1).tolist()
    return out


def dal_run(prompts: dict, component: str, *, target: tuple[float, float], conditional: bool, sampler: Sampler,
            width: int, rank: int, iterations: int, per_prompt: int, threshold: float, lr: float, n_eval: int,
            model_seed: int, train_seed: int, eval_seed: int) -> dict:
    """Finetune ``component`` of a fresh original model with the DAL (seed 000 eq. 6) and the adjusted gradient
    (Algorithm A.1) toward ``target`` (shares of attribute 0, 1) for every prompt, and evaluate before and after.

    Every iteration generates ``per_prompt`` images of every prompt; the DAL's OT targets are computed within each
    prompt's batch (seed 000 generates each batch from one prompt P, [0105]) and, with ``conditional``, within each
    prompt x content type, the conditional DAL of [0132] (age aligned inside every gender x race group).
    Evaluation: ``n_eval`` samples per prompt from the same z_T for the original and the finetuned model, so the
    share of samples whose content type is unchanged is a paired measure (as seed 000's CLIP-I / DINO compare the
    images of one initial noise, [0107]).
    """
    model = build_model(prompts, width, model_seed)
    n = model.n_prompts
    gen = torch.Generator().manual_seed(eval_seed)
    eval_ids = torch.arange(n).repeat_interleave(n_eval)
    z_T = torch.randn(n * n_eval, 2, generator=gen, dtype=torch.float64)
    z_before = generate(model, sampler, z_T, eval_ids)
    before = per_prompt_shares(model, z_before, eval_ids)
    n_trainable = prepare_finetuning(model, component, rank=rank, seed=train_seed)
    train_ids = torch.arange(n).repeat_interleave(per_prompt)

    def loss_fn(z0: torch.Tensor) -> torch.Tensor:
        groups = train_ids * 2 + content_class(z0) if conditional else train_ids
        return dal_loss(model.attribute_logits(z0), list(target), threshold, groups=groups.numpy())

    model.condition(train_ids)
    losses = finetune(model, sampler, loss_fn, "adjusted", dim=2, iterations=iterations, batch=n * per_prompt, lr=lr,
                      seed=train_seed)
    z_after = generate(model, sampler, z_T, eval_ids)
    after = per_prompt_shares(model, z_after, eval_ids)
    same_content = (content_class(z_after) == content_class(z_before)).double()
    after["content_kept_paired"] = [float(same_content[eval_ids == p].mean()) for p in range(n)]
    return {"component": component, "trainable_parameters": n_trainable, "before": before, "after": after,
            "loss": losses}
