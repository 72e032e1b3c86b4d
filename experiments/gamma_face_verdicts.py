"""Paper-vs-here verdicts for the GAMMA-FACE experiments (seed 002), computed from their ``results.json``.

Each function takes the results dictionary of one experiment (``gmm-toy``, ``gmm-digits``, ``gmm-celebahq``), applies
the criterion stated in its docstring (and in the notebook ``paper_figures/gamma_face.ipynb``) and returns a
:class:`Verdict`: the measured numbers as printable lines and one of ``reproduced`` / ``partly`` /
``not reproduced`` / ``not run``, with the conditions. Nothing here is typed in by hand from a run: a new run
changes the verdict with the numbers.

"Clearly" below means by more than two standard errors: for a mean over n paired repeats, se = sd / sqrt(n); for
one run with a bootstrap sd, that sd is the standard error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from theory.metrics import frequency_bias

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_RUN = "reproduced", "partly", "not reproduced", "not run"


@dataclass
class Verdict:
    """The outcome of one paper-vs-here comparison: ``verdict`` with its ``conditions``, and the numbers behind it."""

    verdict: str
    conditions: str
    numbers: list[str] = field(default_factory=list)

    def report(self) -> str:
        return "\n".join(self.numbers + [f"VERDICT: {self.verdict} ({self.conditions})"])


def _share(count: int, n: int) -> str:
    return f"{count}/{n}"


def toy_balance(res: dict, *, share_needed: float = 0.8) -> Verdict:
    """Paper 002 Fig. 1 / Sec. 3.4 on the exact 1-D model: equal sampling per component gives fairer generation.

    Criterion: ``reproduced`` if at each repeat's BIC-chosen t* the GMM-sampled bias is at most half the plain bias
    in at least ``share_needed`` of the repeats; ``partly`` if it is only below the plain bias that often;
    ``not reproduced`` otherwise. The conditions name the noisiest t at which the mean + sd over repeats is still
    at most half the plain bias.
    """
    over = res["over_repeats"]
    n = over["n_repeats"]
    plain_m, plain_sd = over["bias_plain_mean_sd"]
    gmm_m, gmm_sd = over["bias_gmm_at_chosen_t_mean_sd"]
    halved, below = over["repeats_halving_bias"], over["repeats_below_plain"]
    numbers = [f"bias, plain sampling: {plain_m:.3f} +- {plain_sd:.3f} (mean +- sd over {n} repeats)",
               f"bias, GMM sampling at each repeat's t* (t* = {over['chosen_t']}): {gmm_m:.3f} +- {gmm_sd:.3f}",
               f"repeats with the bias halved: {_share(halved, n)}; below plain: {_share(below, n)}"]
    for r in over["by_t"]:
        numbers.append(f"  t = {r['t']:>4} (abar = {r['abar_t']:.3f}): K >= 2 in {_share(r['repeats_with_k_at_least_2'], n)}"
                       f" repeats, GMM bias {r['bias_gmm_mean_mean']:.3f} +- {r['bias_gmm_mean_sd']:.3f}")
    halving_t = [r["t"] for r in over["by_t"] if r["bias_gmm_mean_mean"] + r["bias_gmm_mean_sd"] <= plain_m / 2]
    where = (f"the bias is halved (mean + sd <= plain / 2) for t <= {max(halving_t)}" if halving_t
             else "no t of the grid halves the bias")
    if halved >= share_needed * n:
        return Verdict(REPRODUCED, f"at the BIC-chosen t* in {_share(halved, n)} repeats; {where}", numbers)
    if below >= share_needed * n:
        return Verdict(PARTLY, f"the bias falls at the BIC-chosen t* in {_share(below, n)} repeats but is halved in "
                               f"only {_share(halved, n)}: the noisiest t with K >= 2 has overlapping components; "
                               f"{where}", numbers)
    return Verdict(NOT_REPRODUCED, f"the bias falls at t* in only {_share(below, n)} repeats; {where}", numbers)


def digits_balance(res: dict) -> Verdict:
    """Paper 002 Sec. 4.3 on the digits DDPM: K by BIC, and equal sampling per component balances A_p.

    Criterion (one DDPM, one GMM fit; bootstrap sds over the generated images): ``reproduced`` if the GMM-sampled
    bias at t* is at most half the plain bias; ``partly`` if it is clearly below the plain bias (by more than two
    combined bootstrap sds) without halving it; ``not reproduced`` otherwise.
    """
    plain, plain_sd = res["bias_plain_sampling"], res["bias_plain_sampling_sd"]
    gmm, gmm_sd = res["bias_gmm_sampling"], res["bias_gmm_sampling_sd"]
    shares = res["protected_shares_gmm"][1]
    comps = [c["protected_group1_share"] for c in res["per_component_balance"]]
    numbers = [f"t* = {res['chosen_t']}, K = {res['chosen_k']} by BIC (paper: K = 4 on FFHQ / FairFace)",
               f"bias of A_p: training data {frequency_bias(res['protected_shares_training_data']):.3f}, "
               f"plain DDPM {plain:.3f} +- {plain_sd:.3f}, GMM {gmm:.3f} +- {gmm_sd:.3f} (+- bootstrap sd)",
               f"A_p group-1 share: plain {res['protected_shares_plain'][1]:.3f}, GMM {shares:.3f} (0.5 = balanced)",
               "group-1 share per component: " + ", ".join(f"{c:.2f}" for c in comps)]
    gap = 2 * float(np.hypot(plain_sd, gmm_sd))
    if gmm <= plain / 2:
        return Verdict(REPRODUCED, f"bias halved at t* = {res['chosen_t']}", numbers)
    if gmm < plain - gap:
        pure = sum(c >= 0.9 or c <= 0.1 for c in comps)
        return Verdict(PARTLY, f"bias falls from {plain:.3f} to {gmm:.3f} (more than {gap:.3f}, two combined sds) but "
                               f"is not halved: {pure} of {len(comps)} components are nearly pure in A_p (share <= 0.1 or >= 0.9) "
                               f"and {sum(c >= 0.5 for c in comps)} of {len(comps)} hold mostly group 1", numbers)
    return Verdict(NOT_REPRODUCED, f"bias {gmm:.3f} vs plain {plain:.3f}: no clear reduction", numbers)


def digits_samples(res: dict) -> Verdict:
    """Paper 002 Fig. 2 (an exemplar set of DDPM samples) on digits: the DDPM generates the training distribution.

    Criterion: ``reproduced`` if the plain samples' A_p group-1 share lies within two bootstrap sds of the training
    data's and the real-data classifier that labels them scores at least 0.9 on held-out real digits; otherwise
    ``not reproduced``.
    """
    train, plain = res["protected_shares_training_data"][1], res["protected_shares_plain"][1]
    share_sd = res["bias_plain_sampling_sd"] / 2  # for two groups the bias is |1 - 2 share|
    acc = res["real_classifier_test_accuracy"]
    numbers = [f"A_p group-1 share: training {train:.3f}, plain DDPM {plain:.3f} +- {share_sd:.3f} (bootstrap sd)",
               "digit shares of plain samples: " + ", ".join(f"{d}: {v:.2f}" for d, v in res["digit_shares_plain"].items()),
               f"real-data digit classifier, held-out accuracy: {acc:.3f}",
               f"DDPM: {res['ddpm']['training_steps_run']} steps, final loss {res['ddpm']['final_loss_mean_last_100']:.4f}"]
    if abs(plain - train) <= 2 * share_sd and acc >= 0.9:
        return Verdict(REPRODUCED, "the DDPM reproduces the 80/20 training balance, as its samples are labelled "
                                   "by a reliable classifier", numbers)
    return Verdict(NOT_REPRODUCED, "the plain samples do not match the training balance, or the labelling "
                                   "classifier is unreliable", numbers)


def _f(x: float | None) -> str:
    """A metric to three decimals; "-" where it is undefined (None: eq. 13 or 14 divided by zero)."""
    return "-" if x is None else f"{x:.3f}"


def _rows(res: dict) -> dict[tuple[str, int], dict]:
    return {(r["data"], r["generated_percent"]): r for r in res["downstream"]}


def _paired(res: dict, a: str, b: str, key: str) -> tuple[float, float, int]:
    """Mean, standard error and count of ``key``(setting a) - ``key``(setting b) over the repeats holding both."""
    runs = res["downstream_runs"]
    rb = {r["repeat"]: r for r in runs[b]}
    d = np.array([r[key] - rb[r["repeat"]][key] for r in runs[a]
                  if r["repeat"] in rb and r[key] is not None and rb[r["repeat"]][key] is not None], dtype=float)
    if d.size < 2:
        return float("nan"), float("nan"), int(d.size)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)), int(d.size)


def _direction(mean: float, se: float, lower_is_better: bool) -> str:
    if not np.isfinite(mean):
        return "undefined"
    if abs(mean) <= 2 * se:
        return "no clear change"
    return "better" if (mean < 0) == lower_is_better else "worse"


#: (key, name, lower is better) of the downstream metrics the seed's Tables 1-4 report.
DOWNSTREAM = (("bias", "Bias", True), ("ba", "BA", True), ("kl", "KL", True), ("accuracy", "accuracy", False))


def downstream_at_50(res: dict) -> Verdict:
    """Paper 002 Tables 1-2 on digits: the A_t classifier trained on 50 % GMM-generated + 50 % original data against
    the original-only Baseline.

    Criterion: each of Bias, BA, KL and accuracy is ``better`` / ``worse`` when its mean paired difference from the
    Baseline (same repeat) exceeds two standard errors, else ``no clear change``; BPC is better when it exceeds two
    bootstrap sds above 0. ``reproduced`` if all five are better (the seed's claim: less bias, no loss of accuracy);
    ``partly`` if at least one is better and none is worse; ``not reproduced`` otherwise. Plainly sampled generated
    data at 50 % is the control, compared with GMM data the same way.
    """
    rows = _rows(res)
    base, gmm = rows[("original", 0)], rows[("gmm", 50)]
    numbers = [f"{'metric':>9} {'Baseline':>16} {'GMM 50/50':>16} {'paired diff':>18}  {'outcome':<15} | GMM - plain (50/50)"]
    outcomes = []
    for key, name, lower in DOWNSTREAM:
        m, se, n = _paired(res, "gmm/50", "original/0", key)
        outcome = _direction(m, se, lower)
        outcomes.append(outcome)
        cm, cse, _ = _paired(res, "gmm/50", "plain/50", key)
        numbers.append(f"{name:>9} {_f(base[key]):>8} +- {_f(base[key + '_std'])} {_f(gmm[key]):>8} +- "
                       f"{_f(gmm[key + '_std'])} {m:>+9.3f} +- {se:.3f}  {outcome:<15} | {cm:+.3f} +- {cse:.3f} "
                       f"({_direction(cm, cse, lower)})")
    bpc, bpc_sd = gmm["bpc"], gmm["bpc_std"]
    bpc_outcome = ("undefined" if bpc is None or bpc_sd is None else
                   "better" if bpc > 2 * bpc_sd else "worse" if bpc < -2 * bpc_sd else "no clear change")
    outcomes.append(bpc_outcome)
    numbers.append(f"{'BPC':>9} {0:>8.3f} (by def.) {'':>7}{'-' if bpc is None else f'{bpc:.3f}':>8} +- "
                   f"{'-' if bpc_sd is None else f'{bpc_sd:.3f}'} (bootstrap)  {bpc_outcome}")
    numbers.append(f"({base['n_runs']} repeats; +- is sd over repeats, paired diff +- its standard error)")
    worse = [n for (_, n, _), o in zip(DOWNSTREAM + (("bpc", "BPC", False),), outcomes) if o == "worse"]
    better = [n for (_, n, _), o in zip(DOWNSTREAM + (("bpc", "BPC", False),), outcomes) if o == "better"]
    if len(better) == len(outcomes):
        return Verdict(REPRODUCED, "GMM-augmented training lowers Bias, BA and KL, raises BPC, keeps accuracy", numbers)
    if better and not worse:
        return Verdict(PARTLY, f"better in {', '.join(better)}; no clear change elsewhere", numbers)
    return Verdict(NOT_REPRODUCED, (f"worse in {', '.join(worse)}; " if worse else "") +
                   (f"better in {', '.join(better)}" if better else "no metric clearly better") +
                   "; the original-only classifier is already nearly unbiased here "
                   f"(Bias {base['bias']:.3f} +- {base['bias_std']:.3f})", numbers)


def mixing_ratios(res: dict) -> Verdict:
    """Paper 002 Tables 3-4 (Sec. 6) on digits: the downstream metrics by %generated / %original with GMM data.

    The seed's three claims, each checked on the GMM rows:
    (1) 100 % generated degrades accuracy (domain gap): accuracy at 100/0 is the lowest of the ratios and clearly
        below the Baseline (paired, two standard errors);
    (2) 70/30 is a little better than 100/0: accuracy at 70/30 is clearly above 100/0 (paired over repeats);
    (3) BPC is highest at 50/50.
    ``reproduced`` if all three hold, ``partly`` if one or two, ``not reproduced`` if none.
    """
    rows = _rows(res)
    ratios = sorted({g for (src, g) in rows if src == "gmm"}, reverse=True)
    numbers = [f"{'%gen/%org':>10} {'Bias':>15} {'BA':>15} {'BPC (boot. sd)':>16} {'KL':>15} {'accuracy':>15}"]
    fmt = lambda r, k: "-" if r[k] is None else f"{r[k]:.3f} +- {r[k + '_std']:.3f}"  # noqa: E731
    for src in ("original", "gmm", "plain"):
        for g in ([0] if src == "original" else ratios):
            r = rows[(src, g)]
            label = "orig only" if src == "original" else f"{src} {g}/{100 - g}"
            bpc = "-" if r["bpc"] is None else (f"{r['bpc']:.3f} +- {r['bpc_std']:.3f}" if r["bpc_std"] is not None
                                                else f"{r['bpc']:.3f}")
            numbers.append(f"{label:>10} {fmt(r, 'bias'):>15} {fmt(r, 'ba'):>15} {bpc:>16} {fmt(r, 'kl'):>15} "
                           f"{fmt(r, 'accuracy'):>15}")
    acc = {g: rows[("gmm", g)]["accuracy"] for g in ratios}
    m100, se100, _ = _paired(res, "gmm/100", "original/0", "accuracy")
    c1 = min(acc, key=acc.get) == 100 and m100 < -2 * se100
    m70, se70, _ = _paired(res, "gmm/70", "gmm/100", "accuracy")
    c2 = m70 > 2 * se70
    bpc = {g: rows[("gmm", g)]["bpc"] for g in ratios if rows[("gmm", g)]["bpc"] is not None}
    best = max(bpc, key=bpc.get) if bpc else None
    c3 = best == 50
    sds = [rows[("gmm", g)]["bpc_std"] for g in bpc if rows[("gmm", g)]["bpc_std"] is not None]
    numbers += [f"(1) accuracy lowest at 100/0 and below Baseline: {c1} (lowest at {min(acc, key=acc.get)}/"
                f"{100 - min(acc, key=acc.get)}; 100/0 - Baseline = {m100:+.3f} +- {se100:.3f})",
                f"(2) accuracy 70/30 above 100/0: {c2} ({m70:+.3f} +- {se70:.3f}, paired)",
                f"(3) BPC highest at 50/50: {c3} (highest at {best}/{None if best is None else 100 - best}; "
                f"bootstrap sds of BPC {min(sds, default=float('nan')):.2f}-{max(sds, default=float('nan')):.2f})"]
    held = sum((c1, c2, c3))
    noisy = bool(sds) and max(bpc.values()) - min(bpc.values()) < 2 * min(sds)
    cond = (f"{held} of 3 claims hold" + ("; BPC differences between ratios are within two bootstrap sds, so its "
                                          "ranking is noise" if noisy else ""))
    return Verdict(REPRODUCED if held == 3 else PARTLY if held else NOT_REPRODUCED, cond, numbers)


def celebahq(res: dict) -> Verdict:
    """Paper 002 Sec. 4.3 / Fig. 2 on google/ddpm-celebahq-256: BIC picks K = 4 and the component samples are faces.

    Criterion: ``not run`` when the weights are absent; otherwise ``reproduced`` if BIC picks K = 4, ``partly`` if
    it picks another K >= 2, ``not reproduced`` if K = 1. The A_p balance is not measured (no face attribute
    classifier ships offline).
    """
    if not res.get("weights_available"):
        return Verdict(NOT_RUN, "the CelebA-HQ DDPM weights are not on this machine", [f"reason: {res.get('reason')}"])
    k = res["chosen_k"]
    numbers = [f"t = {res['t']}, PCA to {res['pca_components']} directions "
               f"({res['pca_explained_variance']:.2f} of the variance), K = {k} by BIC",
               "latents per component: " + ", ".join(str(int(v)) for v in res["latents_per_component"])]
    if k == 4:
        return Verdict(REPRODUCED, "BIC picks K = 4 as in the paper; A_p balance not measured", numbers)
    if k >= 2:
        return Verdict(PARTLY, f"BIC picks K = {k}, not 4; A_p balance not measured", numbers)
    return Verdict(NOT_REPRODUCED, "BIC sees a single Gaussian", numbers)
