"""A text-to-image stand-in with several prompts, a text encoder and a "U-Net", for seed 000 Fig. 9 and Table 1.

Seed 000 finetunes Stable Diffusion over many occupation prompts ([0120]) and compares which component is finetuned
(Table 1, [0129]): five soft prompt tokens, LoRA on the text encoder, on the U-Net, or on both. This toy keeps that
structure with every quantity exact:

- a prompt p is a fixed token embedding x_p in R^w (the "vocabulary", never trained);
- a soft prompt s in R^w is added to every prompt's tokens (the prompt-prefix variant: one learned offset shared by
  all prompts, initialised at 0 so that the original model is unchanged);
- the text encoder g_phi is a tanh MLP with two ``torch.nn.Linear`` layers, e_p = g_phi(x_p + s);
- the "U-Net" maps e_p to the logits of a four-component mixture (a ``Linear``, the cross-attention's say in which
  mode is generated) and predicts the mixture's exact noise eps*(z, t) with its own means and standard deviations.

Components (attribute, content) = (0,0), (0,1), (1,0), (1,1) sit at :data:`toy.attribute_classifiers.QUADRANT_MEANS`:
the attribute (gender / age) along x, an unrelated content type along y. The classifier h of the DAL is the exact
attribute posterior of the *original* components (:func:`attribute_logits`), frozen like seed 000's pretrained
classifiers, so that finetuning the means cannot move the classifier with them.

LoRA is peft's (``inject_adapter_in_model`` on the ``Linear`` layers), as in :mod:`scaleup.models`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from toy.attribute_classifiers import QUADRANT_ATTRIBUTE, QUADRANT_MEANS, quadrant_attribute_logits
from toy.denoisers import MixtureDenoiser
from toy.gaussian_mixture import mixture_noise_prediction

#: The finetuned components of seed 000 Table 1, plus full finetuning of every weight of text encoder and U-Net.
Component = Literal["prompt_prefix", "text_encoder_lora", "unet_lora", "text_encoder_unet_lora", "full"]
COMPONENTS: tuple[str, ...] = ("prompt_prefix", "text_encoder_lora", "unet_lora", "text_encoder_unet_lora", "full")
COMPONENT_LABELS = {"prompt_prefix": "prompt prefix (soft prompt)", "text_encoder_lora": "text encoder (LoRA)",
                    "unet_lora": "U-Net (LoRA)", "text_encoder_unet_lora": "T.E. & U-Net (LoRA)",
                    "full": "full finetune (T.E. & U-Net)"}
_LORA_TARGETS = {"text_encoder_lora": ["text_encoder.0", "text_encoder.2"], "unet_lora": ["unet.to_logits"],
                 "text_encoder_unet_lora": ["text_encoder.0", "text_encoder.2", "unet.to_logits"]}

#: Standard deviation of every component (as in ``dft-dal-toy``).
COMPONENT_STD = 0.7


def occupation_logits(minority_shares: np.ndarray, content_shares: np.ndarray) -> torch.Tensor:
    """Log-weights (P, 4) of the P prompts' mixtures: attribute 1 ("old" / the minority) with share
    ``minority_shares[p]``, content 0 with share ``content_shares[p]``, the two independent within each prompt."""
    a = torch.as_tensor(np.asarray(minority_shares, dtype=np.float64))
    c = torch.as_tensor(np.asarray(content_shares, dtype=np.float64))
    if a.ndim != 1 or a.shape != c.shape or not bool(((a > 0) & (a < 1) & (c > 0) & (c < 1)).all()):
        raise ValueError(f"minority_shares and content_shares must be equal-length 1-D arrays in (0, 1); got shapes "
                         f"{tuple(a.shape)}, {tuple(c.shape)}")
    w = torch.stack([(1 - a) * c, (1 - a) * (1 - c), a * c, a * (1 - c)], dim=1)
    return w.log()


class ToyUNet(torch.nn.Module):
    """eps(z, t | e): the exact noise predictor of the mixture whose log-weights are ``to_logits(e)``."""

    def __init__(self, width: int, means: torch.Tensor, stds: torch.Tensor):
        super().__init__()
        self.to_logits = torch.nn.Linear(width, means.shape[0], dtype=torch.float64)
        self.means = torch.nn.Parameter(means.clone())
        self.log_stds = torch.nn.Parameter(stds.log())

    def forward(self, z: torch.Tensor, abar: torch.Tensor | float, embedding: torch.Tensor) -> torch.Tensor:
        log_w = torch.log_softmax(self.to_logits(embedding), dim=-1)
        return mixture_noise_prediction(z, abar, log_w, self.means, self.log_stds.exp())


class PromptConditionedMixture(torch.nn.Module):
    """P prompts -> (soft prompt) -> text encoder -> U-Net: a toy text-to-image model (module docstring).

    Parameters
    ----------
    component_logits : tensor of shape (P, 4)
        The original model's log-weights per prompt (:func:`occupation_logits`); ``to_logits`` is fitted so that the
        original model reproduces them exactly (possible while P <= ``width``: the embeddings are then independent).
    width : int
        Token / embedding width w.
    seed : int
        Draws the token embeddings and the text encoder's weights.

    ``condition(prompt_ids)`` sets which prompt each row of the next batch z is generated with; ``forward(z, abar)``
    then has the signature of the sampler-chain toys (:func:`toy.sampler_chain.finetune`).
    """

    def __init__(self, component_logits: torch.Tensor, *, width: int = 16, seed: int = 0):
        super().__init__()
        logits = torch.as_tensor(component_logits, dtype=torch.float64)
        if logits.ndim != 2 or logits.shape[1] != 4 or not 1 <= logits.shape[0] <= width:
            raise ValueError(f"component_logits must have shape (P, 4) with 1 <= P <= width = {width}; got "
                             f"{tuple(logits.shape)}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("tokens", torch.randn(logits.shape[0], width, generator=gen, dtype=torch.float64))
        self.soft_prompt = torch.nn.Parameter(torch.zeros(width, dtype=torch.float64))
        with torch.random.fork_rng(devices=[]):  # Linear's default initialisation, overwritten below, draws from it
            self.text_encoder = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh(),
                                                    torch.nn.Linear(width, width)).double()
            self.unet = ToyUNet(width, QUADRANT_MEANS, torch.full((4,), COMPONENT_STD, dtype=torch.float64))
        with torch.no_grad():
            for p in self.text_encoder.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / np.sqrt(p.shape[-1]))
        with torch.no_grad():
            # the "pretrained" cross-attention: the min-norm W with W e_p = logits_p for every prompt (exact for
            # independent e_p), bias 0 (a softmax ignores a common shift, so the logits need not be centred)
            embeddings = self.text_encoder(self.tokens)
            self.unet.to_logits.weight.copy_(torch.linalg.lstsq(embeddings, logits, driver="gelsd").solution.T)
            self.unet.to_logits.bias.zero_()
        self.prompt_ids = torch.zeros(0, dtype=torch.long)
        #: the frozen reference whose exact attribute posterior is the classifier h (module docstring)
        self.classifier_reference = MixtureDenoiser(torch.full((4,), 0.25, dtype=torch.float64), QUADRANT_MEANS,
                                                    torch.full((4,), COMPONENT_STD, dtype=torch.float64)
                                                    ).requires_grad_(False)

    @property
    def n_prompts(self) -> int:
        return self.tokens.shape[0]

    def condition(self, prompt_ids: torch.Tensor) -> None:
        """Generate row i of the next batch with prompt ``prompt_ids[i]``."""
        ids = torch.as_tensor(prompt_ids, dtype=torch.long)
        if ids.ndim != 1 or (ids.numel() and (ids.min() < 0 or ids.max() >= self.n_prompts)):
            raise ValueError(f"prompt_ids must be a 1-D tensor of indices in [0, {self.n_prompts - 1}]")
        self.prompt_ids = ids

    def embeddings(self, prompt_ids: torch.Tensor | None = None) -> torch.Tensor:
        """e_p = g_phi(x_p + s) for the given prompts (all prompts by default), shape (B, w)."""
        tokens = self.tokens if prompt_ids is None else self.tokens[prompt_ids]
        return self.text_encoder(tokens + self.soft_prompt)

    def weights(self) -> torch.Tensor:
        """The component weights of every prompt's mixture, shape (P, 4)."""
        return torch.softmax(self.unet.to_logits(self.embeddings()), dim=-1)

    def forward(self, z: torch.Tensor, abar: torch.Tensor | float) -> torch.Tensor:
        if self.prompt_ids.shape[0] != z.shape[0]:
            raise ValueError(f"condition() set {self.prompt_ids.shape[0]} prompts for a batch of {z.shape[0]}")
        return self.unet(z, abar, self.embeddings(self.prompt_ids))

    def attribute_logits(self, z0: torch.Tensor) -> torch.Tensor:
        """The classifier h: log p(attribute | z_0) under the original components, uniform prior, shape (B, 2)."""
        return quadrant_attribute_logits(self.classifier_reference, z0)


def content_class(z0: torch.Tensor) -> torch.Tensor:
    """The content type of each sample, 0 for y < 0: the exact Bayes classifier of the original components with
    equal priors (equal standard deviations and means at y = -3 and +3 make it the sign of y)."""
    return (z0[:, 1] >= 0).long()


def attribute_mass(weights: torch.Tensor, attribute: int) -> torch.Tensor:
    """The model's total weight on the components of one attribute class, per prompt (shape (P,))."""
    return weights[:, QUADRANT_ATTRIBUTE == attribute].sum(1)


def prepare_finetuning(model: PromptConditionedMixture, component: Component, *, rank: int, seed: int) -> int:
    """Make only ``component`` trainable (seed 000 Table 1) and return its number of trainable parameters.

    ``"prompt_prefix"``: the soft prompt s (w numbers; seed 000 trains five tokens). The LoRA variants inject peft
    LoRA of rank ``rank`` (alpha = rank, no dropout, B = 0 so the model starts unchanged) into the text encoder's
    ``Linear`` layers, the U-Net's ``to_logits``, or both. ``"full"``: every weight of text encoder and U-Net (means
    and standard deviations included). ``seed`` draws the LoRA A matrices (peft draws them from torch's global
    generator, which is forked here so that nothing else is disturbed).
    """
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}; got {component!r}")
    model.requires_grad_(False)
    if component == "prompt_prefix":
        model.soft_prompt.requires_grad_(True)
    elif component == "full":
        model.text_encoder.requires_grad_(True)
        model.unet.requires_grad_(True)
    else:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=_LORA_TARGETS[component])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject_adapter_in_model(config, model)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    model.classifier_reference.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
