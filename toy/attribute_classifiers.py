"""The toy classifiers h of the DAL experiments (seed 000, eq. 6: h(x) gives the class probabilities of an image).

- :func:`quadrant_attribute_logits`: the exact attribute classifier of the prompt-conditioned four-component mixture
  of ``dft-dal-toy`` (attribute along x, content along y).
- :func:`g1_g3_logits`: the G1-vs-G3 classifier of the PopAlign 1-D mixture toy (``dft-compare``), tempered.
"""

from __future__ import annotations

import torch

from toy.denoisers import MixtureDenoiser

#: The four components (attribute, content) = (0,0), (0,1), (1,0), (1,1): attribute along x, content along y.
QUADRANT_MEANS = torch.tensor([[-3.0, -3.0], [-3.0, 3.0], [3.0, -3.0], [3.0, 3.0]], dtype=torch.float64)
#: The attribute class of each of the four components.
QUADRANT_ATTRIBUTE = torch.tensor([0, 0, 1, 1])


def quadrant_attribute_logits(model: MixtureDenoiser, z0: torch.Tensor) -> torch.Tensor:
    """The exact attribute classifier: log p(attribute | z_0) with equal priors over the four clean components."""
    reference = MixtureDenoiser(torch.full((4,), 0.25), QUADRANT_MEANS, torch.exp(model.log_stds.detach()))
    log_joint = torch.log(reference.posterior(z0))  # (B, 4), uniform prior
    return torch.stack([torch.logsumexp(log_joint[:, QUADRANT_ATTRIBUTE == a], dim=1) for a in (0, 1)], dim=1)


#: The exact G1-vs-G3 log-odds at x = -7 is 98: its softmax is exactly 1.0 in float64 for every G1 sample, all G1
#: images tie, tied images share their OT target (theory.optimal_transport), and no target is confident. A
#: temperature keeps the classifier's ranking of the images (the only thing the K = 2 targets use) visible.
CLASSIFIER_TEMPERATURE = 10.0


def g1_g3_logits(z0: torch.Tensor) -> torch.Tensor:
    """G1-vs-G3 classifier of the PopAlign toy: log N(x; m_k, s_k) of the reference's G1 and G3 (equal priors),
    divided by :data:`CLASSIFIER_TEMPERATURE`."""
    from toy.popalign_toy import G1, G3, REFERENCE_MEANS, REFERENCE_STDS

    x = z0[:, 0]
    return torch.stack([-0.5 * ((x - REFERENCE_MEANS[k]) / REFERENCE_STDS[k]) ** 2 for k in (G1, G3)],
                       dim=1) / CLASSIFIER_TEMPERATURE
