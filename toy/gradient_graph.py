"""The gradient paths of a sampler chain, read off autograd's own graph (seed 000, [0114], [0118], Fig. 7).

Fig. 7 of seed 000 contrasts the exact gradient of direct finetuning, whose term for eps^(t) reaches theta through
every later step's network Jacobian (the products in B_t of eq. 9), with the adjusted gradient, which detaches z_t
before the network (B_t -> I) and keeps only the direct d eps^(t)/d theta, scaled by C_t. Here the chain is run once
through :func:`theory.sampler_gradient.run_sampler` (the code every finetuning experiment uses), the tensors z_t,
eps^(t) and the adjusted gradient's scale nodes are labelled in their autograd nodes (``Node.metadata``), and the
graph is walked from the loss along ``grad_fn.next_functions``. The walk collapses every unlabelled node (the
network's layers, the scheduler's arithmetic) into edges between labelled ones, so the edge list is what autograd
will backpropagate through, not what the sampler was meant to do.

Indexing as in the paper: a chain of T steps runs z_T -> eps^(T) -> z_{T-1} -> ... -> eps^(1) -> z_0, eps^(t) being
the network at z_t. Gradient edges point from the loss towards theta (the direction of backpropagation).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from theory.sampler_gradient import AdjustedGradient, run_sampler
from toy.sampler_chain import Sampler, eps_model_for

LOSS, THETA = "L", "theta"
_KEY = "fairdiff_label"  # the key under which a node's label is stored in torch.autograd.graph.Node.metadata

#: Kinds of gradient edge. "loss": L -> z_0; "chain": through the sampler's linear step (z_{t-1} -> z_t,
#: z_{t-1} -> eps^(t), and the adjusted gradient's z_{t-1} -> C_t -> eps^(t)); "coupling": eps^(t) -> z_t, through
#: the network's Jacobian J_t = d eps^(t)/d z_t, the factor that builds B of the later steps; "direct":
#: eps^(t) -> theta, the partial d eps^(t)/d theta.
EDGE_KINDS = ("loss", "chain", "coupling", "direct")


def z_label(t: int) -> str:
    """The label of the state z_t (z_0 is the sample the loss sees)."""
    return f"z_{t}"


def eps_label(t: int) -> str:
    """The label of the noise prediction eps^(t) = eps_theta(z_t, t), the network's output at step t."""
    return f"eps^({t})"


def scale_label(t: int) -> str:
    """The label of the adjusted gradient's scale node at step t (identity forward, gradient times C_t backward)."""
    return f"C_{t}"


def parse_label(label: str) -> tuple[str, int | None]:
    """("z" | "eps" | "C" | "L" | "theta", t or None) of a node label."""
    if label in (LOSS, THETA):
        return label, None
    if label.startswith("eps^("):
        return "eps", int(label[5:-1])
    head, _, t = label.partition("_")
    return head, int(t)


def edge_kind(src: str, dst: str) -> str:
    """The kind (:data:`EDGE_KINDS`) of the gradient edge src -> dst."""
    (a, _), (b, _) = parse_label(src), parse_label(dst)
    if a == LOSS:
        return "loss"
    if a == "eps" and b == THETA:
        return "direct"
    if a == "eps" and b == "z":
        return "coupling"
    return "chain"


def _label(tensor: torch.Tensor, label: str) -> None:
    """Store ``label`` in the metadata of ``tensor``'s autograd node, which the graph walk reads back."""
    node = tensor.grad_fn
    if node is None:
        raise ValueError(f"{label} has no autograd node (it does not depend on theta); nothing to label")
    old = node.metadata.get(_KEY)
    if old is not None and old != label:
        raise ValueError(f"one autograd node would carry two labels, {old!r} and {label!r}")
    node.metadata[_KEY] = label


@dataclass
class LabelledChain:
    """One sampled chain whose autograd graph carries labels: the loss, z_0 and every eps^(t) (keyed by t)."""

    loss: torch.Tensor
    z0: torch.Tensor
    eps: dict[int, torch.Tensor]
    n_steps: int


def labelled_chain(model: torch.nn.Module, sampler: Sampler, z_T: torch.Tensor, gradient: AdjustedGradient,
                   loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> LabelledChain:
    """Sample z_0 from z_T with ``gradient`` (exact or adjusted) and label z_t, eps^(t), C_t and the loss.

    The chain is :func:`theory.sampler_gradient.run_sampler` itself; only the noise predictor and the step are
    wrapped, to label their outputs, so the graph is the one finetuning differentiates.
    """
    T = sampler.n_steps
    eps_model = eps_model_for(model, sampler)
    outputs: dict[int, torch.Tensor] = {}

    def labelled_eps(x: torch.Tensor, i: int) -> torch.Tensor:
        eps = eps_model(x, i)
        _label(eps, eps_label(T - i))
        outputs[T - i] = eps
        return eps

    def labelled_step(eps_in: torch.Tensor, z: torch.Tensor, i: int) -> torch.Tensor:
        t = T - i
        if eps_in.grad_fn is not outputs[t].grad_fn:  # the adjusted gradient's scale_gradient node
            _label(eps_in, scale_label(t))
        z_next = sampler.step(eps_in, z, i)
        _label(z_next, z_label(t - 1))
        return z_next

    z0 = run_sampler(labelled_eps, z_T, labelled_step, T, gradient)
    loss = loss_fn(z0)
    _label(loss, LOSS)
    return LabelledChain(loss, z0, outputs, T)


def gradient_edges(root: torch.Tensor, params: Sequence[torch.Tensor]) -> list[tuple[str, str]]:
    """The labelled edges of autograd's graph from ``root`` (a labelled tensor) down to the parameters ``params``.

    Depth-first along ``next_functions``: from each labelled node, every unlabelled node below is passed through
    until a labelled node or a parameter's ``AccumulateGrad`` (all parameters are one node, :data:`THETA`) is met;
    each such meeting is an edge. Sorted, without duplicates (two routes through one step's arithmetic, as DDIM's
    eps enters through x_0 and directly, are one edge).
    """
    param_ids = {id(p) for p in params}
    keep_alive = []  # python wrappers of visited nodes, held so that no id() is reused during the walk

    def label_of(node) -> str | None:
        if node is None:
            return None
        if hasattr(node, "variable"):  # AccumulateGrad of a leaf
            return THETA if id(node.variable) in param_ids else None
        return node.metadata.get(_KEY)

    start = root.grad_fn
    if start is None or label_of(start) is None:
        raise ValueError("root must be a labelled tensor with an autograd node (labelled_chain's loss)")
    edges: set[tuple[str, str]] = set()
    done_labels: set[str] = set()
    frontier = [start]
    while frontier:
        node = frontier.pop()
        src = label_of(node)
        if src in done_labels:
            continue
        done_labels.add(src)
        seen: set[int] = set()
        stack = [child for child, _ in node.next_functions if child is not None]
        while stack:
            child = stack.pop()
            keep_alive.append(child)
            if id(child) in seen:
                continue
            seen.add(id(child))
            dst = label_of(child)
            if dst is not None:
                edges.add((src, dst))
                if dst != THETA:
                    frontier.append(child)
            elif not hasattr(child, "variable"):
                stack.extend(c for c, _ in child.next_functions if c is not None)
    return sorted(edges)


def count_paths(edges: Sequence[tuple[str, str]], source: str = LOSS) -> dict[str, int]:
    """Number of distinct directed paths from ``source`` to every node of the (acyclic) edge list."""
    out_edges = defaultdict(list)
    for a, b in edges:
        out_edges[a].append(b)
    memo: dict[str, dict[str, int]] = {}

    def from_node(a: str) -> dict[str, int]:
        if a not in memo:
            counts: dict[str, int] = defaultdict(int)
            for b in out_edges[a]:
                counts[b] += 1
                for c, n in from_node(b).items():
                    counts[c] += n
            memo[a] = dict(counts)
        return memo[a]

    return from_node(source)


def coupled_paths(edges: Sequence[tuple[str, str]], t: int) -> int:
    """Paths from the loss into eps^(t) that pass through another step's noise prediction eps^(s) on the way: the
    coupling between time steps that B_t carries (seed 000, [0114])."""
    target = eps_label(t)
    # the paths that avoid every other eps^(s) are those of the graph without the edges leaving an eps^(s), s != t
    pruned = [e for e in edges if not (parse_label(e[0])[0] == "eps" and e[0] != target)]
    return count_paths(edges).get(target, 0) - count_paths(pruned).get(target, 0)


def eps_weights(chain: LabelledChain) -> dict[int, np.ndarray]:
    """d(sum z_0)/d eps^(t) by autograd, per t: the weight with which d eps^(t)/d theta enters d(sum z_0)/d theta.

    Under the exact gradient this is 1^T k_t B_t (eq. 9; k_t = -A_t); under the adjusted gradient 1^T k_t C_t, since
    z is detached before the network (B_t -> I) and the gradient reaching eps^(t) is scaled by C_t.
    """
    ts = sorted(chain.eps)
    grads = torch.autograd.grad(chain.z0.sum(), [chain.eps[t] for t in ts], retain_graph=True)
    return {t: g.detach().sum(0).numpy() for t, g in zip(ts, grads)}
