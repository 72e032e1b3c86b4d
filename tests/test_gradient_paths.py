"""Paper 000 Fig. 7 from autograd's graph (toy.gradient_graph, experiments.dft_gradient_paths): the exact chain
couples every time step through the network Jacobians, the adjusted one keeps only the direct paths.

Everything structural is found by walking ``loss.grad_fn``; the expected counts come from eq. 9 (B_t is a product of
t - 1 factors (I - c_s J_s), hence 2^(t-1) terms) and the weights from b_matrices, not from the walk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments.dft_coefficients import sd_scheduler
from experiments.dft_gradient_paths import EXPERIMENTS
from experiments.dft_models import SD_BETAS
from experiments.experiment import RunContext
from theory.sampler_gradient import AdjustedGradient
from toy.denoisers import MLPDenoiser
from toy.gradient_graph import (
    THETA,
    count_paths,
    coupled_paths,
    edge_kind,
    eps_label,
    gradient_edges,
    labelled_chain,
    z_label,
)
from toy.sampler_chain import make_sampler


def _edges(steps: int, gradient: AdjustedGradient, dim: int = 2):
    sampler = make_sampler("ddim", SD_BETAS, steps)
    model = MLPDenoiser(dim, hidden=6, seed=3)
    z_T = torch.randn(2, dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    chain = labelled_chain(model, sampler, z_T, gradient, lambda z0: z0.square().sum())
    return gradient_edges(chain.loss, list(model.parameters()))


def _adjusted(steps: int, coefficients: str) -> AdjustedGradient:
    return AdjustedGradient.from_scheduler(sd_scheduler("ddim"), steps, "adjusted", coefficients=coefficients)


@pytest.mark.parametrize("steps", [3, 4])
def test_exact_graph_couples_every_step_through_the_network(steps):
    edges = _edges(steps, AdjustedGradient("exact"))
    paths = count_paths(edges)
    for s in range(1, steps):  # z_T is noise without gradient: eps^(T) has no edge back into it
        assert (eps_label(s), z_label(s)) in edges, f"no gradient from eps^({s}) into z_{s} (J_{s})"
    for t in range(1, steps + 1):
        assert (eps_label(t), THETA) in edges
        assert paths[eps_label(t)] == 2 ** (t - 1)  # one path per term of B_t = prod_{s<t} (I - c_s J_s)
        assert coupled_paths(edges, t) == 2 ** (t - 1) - 1
    assert paths[THETA] == sum(2 ** (t - 1) for t in range(1, steps + 1))


@pytest.mark.parametrize("coefficients", ["sampler", "algorithm_a1"])
@pytest.mark.parametrize("steps", [3, 4])
def test_adjusted_graph_has_only_direct_paths(steps, coefficients):
    edges = _edges(steps, _adjusted(steps, coefficients))
    assert not [e for e in edges if edge_kind(*e) == "coupling"]
    paths = count_paths(edges)
    for t in range(1, steps + 1):
        assert paths[eps_label(t)] == 1 and coupled_paths(edges, t) == 0
        assert (f"C_{t}", eps_label(t)) in edges  # the gradient reaches eps^(t) only through its scale C_t
    assert paths[THETA] == steps


def test_the_walk_sees_a_forgotten_detach():
    """A negative control: an adjusted gradient that scales eps but does not detach z brings the coupling back."""

    class NoDetach(AdjustedGradient):
        def network_input(self, z):
            return z

    leaky = _adjusted(3, "sampler")
    leaky.__class__ = NoDetach
    edges = _edges(3, leaky)
    assert (eps_label(1), z_label(1)) in edges and coupled_paths(edges, 3) == 3


def test_walk_refuses_an_unlabelled_root():
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="labelled"):
        gradient_edges((x * 2).sum(), [x])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    experiment = EXPERIMENTS[0]
    ctx = RunContext(name=experiment.name, out_dir=tmp_path_factory.mktemp("paths"), seed=7, quick=True)
    return experiment.run(experiment.make_config(True), ctx)


def test_weights_match_eq9(quick_run):
    for key, graph in quick_run["graphs"].items():
        for t, w in graph["weight_autograd"].items():
            np.testing.assert_allclose(w, graph["weight_eq9"][t], rtol=1e-10, atol=1e-14, err_msg=f"{key} t={t}")
    sampler_w = [w[0] for w in quick_run["graphs"]["adjusted_sampler"]["weight_autograd"].values()]
    np.testing.assert_allclose(sampler_w, sampler_w[0], rtol=1e-12)  # A_t -> 1: every step weighted alike
    a1 = [w[0] for w in quick_run["graphs"]["adjusted_algorithm_a1"]["weight_autograd"].values()]
    assert max(map(abs, a1)) / min(map(abs, a1)) > 2  # DDPM 1/A_t under DDIM does not equalise the steps


def test_run_is_json_and_plots(quick_run):
    results = json.loads(json.dumps(quick_run, allow_nan=False))
    figs = EXPERIMENTS[0].plot(results)
    assert list(figs) == ["dft_gradient_paths"]
    assert len(figs["dft_gradient_paths"].axes) == 3
