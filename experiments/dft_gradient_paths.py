"""``dft-gradient-paths``: seed 000 Fig. 7, the gradient paths of exact vs adjusted direct finetuning, drawn from
the code's own autograd graph.

Seed 000, [0118]: "Fig. 7 shows the comparison of unadjusted and adjusted direct finetuning ... Gray solid lines
denote the sampling process. Dashed lines highlight the gradient computation with respect to the model parameter".
A T-step DDIM chain of a tiny MLP noise predictor is run once per gradient mode through
:func:`theory.sampler_gradient.run_sampler` (exact; adjusted with Algorithm A.1's C_i; adjusted with the sampler's own
C_i) and :mod:`toy.gradient_graph` walks ``loss.grad_fn`` to list which labelled nodes (z_t, eps^(t), C_t, theta) the
backward pass connects. Stored per mode: the edge list, the number of paths from the loss into each eps^(t) (eq. 9's
B_t has 2^(t-1) terms), those passing through another step's eps^(s), and the weight with which d eps^(t)/d theta
enters d(sum z_0)/d theta, measured by autograd and recomputed from eq. 9 (k_t B_t, or k_t C_t when B_t -> I).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from experiments.dft_models import SD_BETAS  # noqa: E402
from experiments.experiment import Experiment, RunContext  # noqa: E402
from theory.sampler_gradient import AdjustedGradient, b_matrices  # noqa: E402
from toy.denoisers import MLPDenoiser  # noqa: E402
from toy.gradient_graph import (  # noqa: E402
    LOSS,
    THETA,
    count_paths,
    coupled_paths,
    edge_kind,
    eps_label,
    eps_weights,
    gradient_edges,
    labelled_chain,
    parse_label,
)
from toy.sampler_chain import chain_terms, diffusers_scheduler, make_sampler  # noqa: E402

#: The three graphs: (key, gradient mode, coefficients, panel title)
GRAPHS = (
    ("exact", "exact", "sampler", "unadjusted DFT: exact gradient (eq. 9)"),
    ("adjusted_algorithm_a1", "adjusted", "algorithm_a1", "adjusted DFT, Algorithm A.1's C_t = 1/A_t (DDPM A_t)"),
    ("adjusted_sampler", "adjusted", "sampler", "adjusted DFT, the sampler's own C_t (A_t -> 1 exactly)"),
)


@dataclass(frozen=True)
class GradientPathsConfig:
    steps: int = 3  # the paper's Fig. 7 explains the paths at t = 3
    sampler: str = "ddim"
    dim: int = 1  # one dimension: every path weight is a number that can be written on the figure
    hidden: int = 8


def make_config(quick: bool) -> GradientPathsConfig:
    return GradientPathsConfig()  # seconds either way


def _eq9_weights(model, sampler, z_T, gradient: AdjustedGradient) -> np.ndarray:
    """1^T k_t B_t (exact; B_t from the network Jacobians, :func:`theory.sampler_gradient.b_matrices`) or 1^T k_t C_t
    (adjusted, B_t = I), per step in sampling order: eq. 9's weight of d eps^(t)/d theta, computed without the graph."""
    k = -sampler.a_coefficients
    jacobians, _ = chain_terms(model, sampler, z_T)
    ones = np.ones(z_T.shape[1])
    if gradient.mode == "exact":
        b = b_matrices(sampler.jacobian_coefficients, [j[0] for j in jacobians])
        return np.stack([k[i] * ones @ b[i] for i in range(sampler.n_steps)])
    return np.stack([k[i] * gradient.scales[i] * ones for i in range(sampler.n_steps)])


def run(cfg: GradientPathsConfig, ctx: RunContext) -> dict:
    model_seed, noise_seed = ctx.seeds(2)
    sampler = make_sampler(cfg.sampler, SD_BETAS, cfg.steps)
    model = MLPDenoiser(cfg.dim, hidden=cfg.hidden, seed=model_seed)
    z_T = torch.randn(1, cfg.dim, generator=torch.Generator().manual_seed(noise_seed), dtype=torch.float64)
    ts = list(range(cfg.steps, 0, -1))  # sampling order: t = T first
    graphs = {}
    for key, mode, coefficients, title in GRAPHS:
        gradient = AdjustedGradient.from_scheduler(diffusers_scheduler(cfg.sampler, SD_BETAS), cfg.steps, mode,
                                                   coefficients=coefficients)
        chain = labelled_chain(model, sampler, z_T, gradient, lambda z0: z0.square().sum())
        edges = gradient_edges(chain.loss, list(model.parameters()))
        paths = count_paths(edges)
        measured = eps_weights(chain)
        formula = _eq9_weights(model, sampler, z_T, gradient)
        graphs[key] = {
            "title": title, "mode": mode, "coefficients": coefficients,
            "edges": [[a, b, edge_kind(a, b)] for a, b in edges],
            "paths_into_eps": {str(t): paths.get(eps_label(t), 0) for t in ts},
            "coupled_paths_into_eps": {str(t): coupled_paths(edges, t) for t in ts},
            "paths_to_theta": paths.get(THETA, 0),
            "scale_C": None if gradient.scales is None else {str(t): float(c) for t, c in zip(ts, gradient.scales)},
            "weight_autograd": {str(t): measured[t].tolist() for t in ts},
            "weight_eq9": {str(t): formula[i].tolist() for i, t in enumerate(ts)},
        }
    # the sampling process: every dependency of the forward pass is an edge of the exact graph, reversed
    sampling = [[b, a] for a, b, kind in graphs["exact"]["edges"] if kind != "loss" and b != THETA]
    # z_T is drawn noise, a leaf without gradient, so no graph holds it: its two forward edges are those of every step
    sampling += [[f"z_{cfg.steps}", eps_label(cfg.steps)], [f"z_{cfg.steps}", f"z_{cfg.steps - 1}"]]
    return {"steps": cfg.steps, "timesteps": [int(t) for t in _visited(cfg)], "k": (-sampler.a_coefficients).tolist(),
            "sampling_edges": sorted(sampling), "graphs": graphs,
            "eq9_terms_in_B": {str(t): 2 ** (t - 1) for t in ts}}


def _visited(cfg: GradientPathsConfig) -> list[int]:
    scheduler = diffusers_scheduler(cfg.sampler, SD_BETAS)
    scheduler.set_timesteps(cfg.steps)
    return scheduler.timesteps.tolist()


# ---------------------------------------------------------------------------------------------------- drawing
EDGE_STYLES = {"loss": dict(color="0.35"), "chain": dict(color="C0"), "coupling": dict(color="C3", lw=2.0),
               "direct": dict(color="C2", lw=2.0)}
EDGE_NAMES = {"chain": "through the sampler step (linear in z, eps)", "coupling": "through J_t = d eps^(t)/d z_t "
              "(couples time steps: B_t)", "direct": "d eps^(t)/d theta (direct)", "loss": "dL/dz_0"}


def _positions(steps: int) -> dict[str, tuple[float, float]]:
    """z_t on a row (z_T left), eps^(t) above between z_t and z_{t-1}, theta on top, the loss right of z_0."""
    pos = {f"z_{t}": (2.0 * (steps - t), 0.0) for t in range(steps + 1)}
    pos.update({eps_label(t): (2.0 * (steps - t) + 1.0, 1.0) for t in range(1, steps + 1)})
    pos[THETA] = (float(steps), 2.4)
    pos[LOSS] = (2.0 * steps + 1.3, 0.0)
    return pos


def _node_text(label: str) -> str:
    kind, t = parse_label(label)
    return {"z": f"$z_{t}$", "eps": rf"$\epsilon^{{({t})}}$", LOSS: r"$\mathcal{L}$", THETA: r"$\theta$"}[kind]


def _arrow(ax, a, b, *, rad: float, ls: str, **style) -> FancyArrowPatch:
    patch = FancyArrowPatch(a, b, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=11, ls=ls,
                            shrinkA=14, shrinkB=14, lw=style.pop("lw", 1.3), **style)
    ax.add_patch(patch)
    return patch


def _draw_graph(ax, results: dict, key: str) -> None:
    steps, graph = results["steps"], results["graphs"][key]
    pos = _positions(steps)
    for a, b in results["sampling_edges"]:  # the forward sampling process: gray solid, straight
        _arrow(ax, pos[a], pos[b], rad=0.0, ls="-", color="0.7")
    for t in range(1, steps + 1):  # theta feeds every network call
        _arrow(ax, pos[THETA], pos[eps_label(t)], rad=0.0, ls="-", color="0.7")
    # the gradient edges, as the graph walk found them; C_t (the scale node) is drawn as a label on its edge
    scales = graph["scale_C"] or {}
    for a, b, kind in graph["edges"]:
        if parse_label(b)[0] == "C":
            continue
        label = None
        if parse_label(a)[0] == "C":
            t = parse_label(a)[1]
            a = next(src for src, dst, _ in graph["edges"] if dst == f"C_{t}")
            label = f"x C_{t} = {scales[str(t)]:.3g}"
        # curved, so that no gradient edge hides the straight gray forward edge it runs beside
        _arrow(ax, pos[a], pos[b], rad=-0.3 if kind != "direct" else 0.15, ls=(0, (4, 2.5)), **EDGE_STYLES[kind])
        if label:
            (xa, ya), (xb, yb) = pos[a], pos[b]
            ax.text((xa + xb) / 2 + 0.35, (ya + yb) / 2 - 0.18, label, fontsize=7, color="C0")
    for t in range(1, steps + 1):  # the weight of d eps^(t)/d theta in d(sum z_0)/d theta, on the direct edge
        w = np.asarray(graph["weight_autograd"][str(t)])
        (x, y), (xt, yt) = pos[eps_label(t)], pos[THETA]
        ax.text((x + xt) / 2, (y + yt) / 2, f"w = {w[0]:.3g}" if w.size == 1 else f"|w| = {np.linalg.norm(w):.3g}",
                ha="center", va="center", fontsize=7.5, color="C2", bbox=dict(fc="white", ec="none", pad=1.0))
    for label, (x, y) in pos.items():
        ax.text(x, y, _node_text(label), ha="center", va="center", fontsize=12,
                bbox=dict(boxstyle="circle,pad=0.25", fc="white", ec="0.3"))
    counts = ", ".join(f"t={t}: {graph['paths_into_eps'][str(t)]} ({graph['coupled_paths_into_eps'][str(t)]} coupled)"
                       for t in range(steps, 0, -1))
    ax.set_title(f"{graph['title']}\npaths from L into eps^(t): {counts}", fontsize=9)
    ax.set(xlim=(-0.6, 2 * steps + 1.9), ylim=(-0.9, 2.9), aspect="equal")
    ax.axis("off")


def plot(results: dict) -> dict:
    """Fig. 7 of paper 000 from the stored edge lists: one diagram per gradient mode."""
    fig, axes = plt.subplots(len(GRAPHS), 1, figsize=(7.5, 4.0 * len(GRAPHS)), layout="constrained")
    for ax, (key, *_rest) in zip(axes, GRAPHS):
        _draw_graph(ax, results, key)
    handles = [Line2D([], [], color="0.7", ls="-", label="sampling process (forward)")]
    handles += [Line2D([], [], ls=(0, (4, 2.5)), label=f"gradient: {EDGE_NAMES[k]}",
                       **{"lw": 1.3, **EDGE_STYLES[k]}) for k in ("chain", "coupling", "direct")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(f"Paper 000 Fig. 7 from autograd's graph: {results['steps']}-step DDIM, tiny MLP (1-D); "
                 "w = weight of d eps^(t)/d theta in d z_0/d theta", fontsize=10)
    return {"dft_gradient_paths": fig}


EXPERIMENTS = [Experiment("dft-gradient-paths", make_config, run, plot)]
