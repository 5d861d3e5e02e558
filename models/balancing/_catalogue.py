"""Every built-in balancing method, described apart from its implementation.

Each entry is what ``mtlstudy methods`` and docs/METHODS.md show: the reference, what the
method reads, its hyperparameters with their defaults, and its conventions next to LibMTL
and torchjd with how closely it agrees (the oracle tests in
tests/models/balancing/test_oracles.py assert those, on 350 random and degenerate
Jacobians). The module imports no torch, so listing the methods or checking a spec's
method names does not start the training stack. ``@register_balancer`` registers each
implementation against its entry and refuses a class whose ``__init__`` defaults differ
from it (:mod:`models.balancing._registry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MISSING",
    "GradientSource",
    "MethodInfo",
    "defaults",
    "describe",
    "list_methods",
    "methods_markdown",
    "needs_gradients",
    "paper",
    "params_only",
    "reads",
]

#: Which task gradients a method reads: none; the Gramian over the shared parameters (or
#: shared features, as the trial's ``gradient_space`` says); the last shared layer's
#: Gramian only; or the whole T×N Jacobian over the same space, from which the method
#: returns the shared update direction itself (``Balancer.direction``).
GradientSource = Literal["none", "shared", "last_shared", "jacobian"]


@dataclass(frozen=True)
class MethodInfo:
    """One balancing method as its users see it.

    ``options`` are the keyword arguments of the implementation's ``__init__`` after
    ``tasks``, with their defaults: the hyperparameters ``balancing.create`` accepts.
    ``params_only``: the method keeps state per shared parameter, so it reads the
    Jacobian over the shared parameters only (``gradient_space: params``): the shared
    features are other samples' at every step.
    """

    paper: str
    gradients: GradientSource = "none"
    uses_kpis: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    conventions: str = ""
    params_only: bool = False

    @property
    def reads(self) -> str:
        """What the method reads besides the losses, in words."""
        needs = {
            "none": "losses",
            "shared": "losses, Gramian",
            "last_shared": "losses, last-layer Gramian",
            "jacobian": "losses, Jacobian",
        }
        return needs[self.gradients] + (", KPIs" if self.uses_kpis else "")


_AMTL = "Yun, Cho. Achievement-based Training Progress Balancing for Multi-Task Learning. ICCV 2023"
_IMTL = (
    "Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. Towards Impartial Multi-task Learning. ICLR 2021"
)
_JACOBIAN_DESCENT = "Quinton, Rey. Jacobian Descent for Multi-Objective Optimization. arXiv 2024"
#: AMTL's hyperparameters, shared by the methods built on its weights; the potentials
#: (task → single-task KPI) come from the trial, not from the search space.
_AMTL_OPTIONS: Mapping[str, Any] = {
    "potentials": None,
    "margin": 0.05,
    "gamma": 2.0,
    "ema": 0.1,
    "overshoot": "clamp",
}
_TORCHJD_RIDGE = "torchjd's ridge set to the project's (reg_eps = 1e-12/T, norm_eps = 0)"

#: The built-in methods by name; a method registered from elsewhere is described by its
#: class when it registers (:mod:`models.balancing._registry`).
_METHODS: dict[str, MethodInfo] = {
    "aligned_mtl": MethodInfo(
        paper=(
            "Senushkin, Patakin, Kuznetsov, Konushin. Independent Component Alignment for "
            "Multi-Task Learning. CVPR 2023"
        ),
        gradients="shared",
        conventions=(
            "sums the aligned gradients: torchjd's (mean preference) × T; eigenvalues kept above "
            "1e-10·max (LibMTL: T·float32 eps). Update within 1e-6 of torchjd"
        ),
    ),
    "amtl": MethodInfo(
        paper=_AMTL,
        uses_kpis=True,
        options=_AMTL_OPTIONS,
        conventions="overshoot `clamp` (default) or the seed's `rebound` (squares a negative base)",
    ),
    "amtl_sum": MethodInfo(
        paper=_AMTL,
        uses_kpis=True,
        options=_AMTL_OPTIONS,
        conventions="as amtl, on the arithmetic sum",
    ),
    "cagrad": MethodInfo(
        paper=(
            "Liu, Liu, Jin, Stone, Liu. Conflict-Averse Gradient Descent for Multi-task Learning. "
            "NeurIPS 2021"
        ),
        gradients="shared",
        options={"c": 0.5},
        conventions=(
            "weights divided by 1 + c² (the official rescale=1); exact dual by active-set QP "
            "(official: SLSQP). Equals torchjd's (cvxpy, CLARABEL) to 1e-4 of the update, its "
            "solver's accuracy; where 0 is in the gradients' hull it takes the mean, as the "
            "official code, torchjd zero"
        ),
    ),
    "cagrad_amtl": MethodInfo(
        paper=_AMTL,
        gradients="shared",
        uses_kpis=True,
        options={**_AMTL_OPTIONS, "c": 0.5},
        conventions="AMTL's weights, then CAGrad on the weighted Gramian",
    ),
    "config": MethodInfo(
        paper=(
            "Liu, Chu, Thuerey. ConFIG: Towards Conflict-free Training of Physics Informed Neural "
            "Networks. ICLR 2025"
        ),
        gradients="shared",
        conventions=(
            "as torchjd's ConFIG from the Gramian (C⁺ drops eigenvalues < 1e-13·max). Update "
            "within 1e-6 of torchjd"
        ),
    ),
    "db_mtl": MethodInfo(
        paper="Lin, Ye, Xu, Shi, Zhang. Dual-Balancing for Multi-Task Learning. arXiv 2023",
        gradients="shared",
        options={"beta": 0.9, "beta_sigma": 0.5},
        conventions="EMA of gradient norms, not gradients; beta_sigma 0.5 (LibMTL: 0)",
    ),
    "dtp": MethodInfo(
        paper=(
            "Guo, Haque, Huang, Yeung, Fei-Fei. Dynamic Task Prioritization for Multitask "
            "Learning. ECCV 2018"
        ),
        uses_kpis=True,
        options={"gamma": 0.5, "kpi_ema": 0.1},
        conventions="KPI smoothed by an EMA, kpi_ema 0.1 as the seed code (1: the latest KPI)",
    ),
    "dualproj": MethodInfo(
        paper=_JACOBIAN_DESCENT,
        gradients="shared",
        conventions=f"{_TORCHJD_RIDGE}. Weights within 1e-6 of torchjd",
    ),
    "dwa": MethodInfo(
        paper="Liu, Johns, Davison. End-to-End Multi-Task Learning with Attention. CVPR 2019",
        options={"temperature": 2.0},
        conventions="as LibMTL",
    ),
    "ew": MethodInfo(
        paper="equal weighting (sum of task losses)",
        conventions="weights 1: torchjd's Sum, exactly",
    ),
    "fairgrad": MethodInfo(
        paper="Ban, Ji. Fair Resource Allocation in Multi-Task Learning. ICML 2024",
        gradients="shared",
        options={"alpha": 1.0},
        conventions=(
            "exact Newton solve (LibMTL, torchjd: least_squares to 1e-8); zero-gradient tasks "
            "weigh 0. Weights within 1e-6 of torchjd"
        ),
    ),
    "excess_mtl": MethodInfo(
        paper=(
            "He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi, Zhao. Robust Multi-Task Learning with "
            "Excess Risks. ICML 2024"
        ),
        gradients="jacobian",
        options={"robust_step_size": 0.01},
        conventions=(
            "shared parameters only (squared-gradient sums per parameter); weights sum to T "
            "and weigh the update and the heads, as LibMTL; updated in log space; a task whose "
            "first excess risk is 0 takes its first positive one as reference (LibMTL: "
            "divides by 0)"
        ),
        params_only=True,
    ),
    "famo": MethodInfo(
        paper="Liu, Feng, Stone, Liu. FAMO: Fast Adaptive Multitask Optimization. NeurIPS 2023",
        options={"lr": 0.025, "gamma": 0.001},
        conventions="the next step's losses stand in for the re-evaluated batch",
    ),
    "fixed": MethodInfo(
        paper="fixed, hand-set task weights (weighted sum of task losses)",
        options={"weights": ""},
        conventions="torchjd's Constant (weights kept in float32: within 1e-7)",
    ),
    "graddrop": MethodInfo(
        paper=(
            "Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov. Just Pick a Sign: "
            "Optimizing Deep Multitask Models with Gradient Sign Dropout. NeurIPS 2020"
        ),
        gradients="jacobian",
        options={"leak": 0.0},
        conventions=(
            "sign purity of each coordinate of the Jacobian on either gradient space, as "
            "torchjd's GradDrop (LibMTL: shared features only, gradients multiplied by the "
            "features' signs and summed over the batch); no 1e-7 in the purity's denominator; "
            "heads weighted 1. Update within 1e-6 of torchjd's with the same draws"
        ),
    ),
    "gls": MethodInfo(
        paper=(
            "Chennupati, Sistu, Yogamani, Rawashdeh. MultiNet++: Multi-Stream Feature Aggregation "
            "and Geometric Loss Strategy for Multi-Task Learning. CVPR Workshops 2019"
        ),
        conventions="as LibMTL",
    ),
    "gradnorm": MethodInfo(
        paper=(
            "Chen, Badrinarayanan, Lee, Rabinovich. GradNorm: Gradient Normalization for Adaptive "
            "Loss Balancing. ICML 2018"
        ),
        gradients="last_shared",
        options={"alpha": 1.5, "lr": 0.025},
        conventions="reads the last shared layer's Gramian",
    ),
    "gradvac": MethodInfo(
        paper=(
            "Wang, Tsvetkov, Firat, Cao. Gradient Vaccine: Investigating and Improving Multi-task "
            "Optimization in Massively Multilingual Models. ICLR 2021"
        ),
        gradients="shared",
        options={"beta": 0.5},
        conventions=(
            "whole-model grouping; eps 1e-8 in the denominators as torchjd. Weights within 1e-6 of"
            " torchjd (exactly opposite gradients: first step only, √(1−φ²) is rounding)"
        ),
    ),
    "imtl": MethodInfo(
        paper=_IMTL,
        gradients="shared",
        options={"lr": 0.01},
        conventions="IMTL-G on scaled losses; scales descend e^s·L − s unweighted, as the paper",
    ),
    "imtl_g": MethodInfo(
        paper=_IMTL,
        gradients="shared",
        conventions=(
            "least-norm solution of the scale-free system where G is singular (torchjd: pinv(G)); "
            "weights within 1e-6 of torchjd where they are unique"
        ),
    ),
    "mean": MethodInfo(
        paper="mean of task losses (equal weighting divided by the number of tasks)",
        conventions="weights 1/T: torchjd's Mean, exactly",
    ),
    "mgda": MethodInfo(
        paper="Sener, Koltun. Multi-Task Learning as Multi-Objective Optimization. NeurIPS 2018",
        gradients="shared",
        conventions=(
            "exact active-set QP (official: Frank-Wolfe). Update within 1e-6 of an exact QP"
        ),
    ),
    "moco": MethodInfo(
        paper=(
            "Fernando, Shen, Liu, Chaudhury, Murugesan, Chen. Mitigating Gradient Bias in "
            "Multi-objective Learning: A Provably Convergent Approach. ICLR 2023"
        ),
        gradients="jacobian",
        options={"beta": 0.5, "beta_sigma": 0.5, "gamma": 0.1, "gamma_sigma": 0.5, "rho": 0.0},
        conventions=(
            "shared parameters only (tracks each task's gradient); gradients scaled to their "
            "loss over their norm + 1e-8 as LibMTL; heads weighted by λ (LibMTL: 1)"
        ),
        params_only=True,
    ),
    "modo": MethodInfo(
        paper=(
            "Chen, Fernando, Ying, Chen. Three-Way Trade-Off in Multi-Objective Learning: "
            "Optimization, Generalization and Conflict-Avoidance. NeurIPS 2023"
        ),
        gradients="shared",
        options={"gamma": 0.001, "rho": 0.1},
        conventions=(
            "single-batch Gramian (paper, LibMTL: two batches for λ, a third for the update). "
            "Weights within 1e-6 of torchjd"
        ),
    ),
    "nash_mtl": MethodInfo(
        paper=(
            "Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya. Multi-Task Learning as "
            "a Bargaining Game. ICML 2022"
        ),
        gradients="shared",
        options={"max_iter": 100, "max_norm": 0.0},
        conventions=(
            "exact Newton solve of α⊙Gα = 1 (LibMTL: cvxpy); max_norm 0, no clip (LibMTL: 1, i.e. "
            "α/√T). Equals torchjd's α to 1e-5 where its 20 cvxpy steps solve the equation to "
            "1e-6 (on many Gramians they stop short)"
        ),
    ),
    "pcgrad": MethodInfo(
        paper=(
            "Yu, Kumar, Gupta, Levine, Hausman, Finn. Gradient Surgery for Multi-Task Learning. "
            "NeurIPS 2020"
        ),
        gradients="shared",
        conventions="sums the projected gradients. Weights within 1e-6 of torchjd (same draws)",
    ),
    "pcgrad_amtl": MethodInfo(
        paper=_AMTL,
        gradients="shared",
        uses_kpis=True,
        options=_AMTL_OPTIONS,
        conventions="AMTL's weights, then PCGrad on the weighted Gramian",
    ),
    "rlw": MethodInfo(
        paper=(
            "Lin, Ye, Zhang, Tsang. Reasonable Effectiveness of Random Weighting: A Litmus Test "
            "for Multi-Task Learning. TMLR 2022"
        ),
        conventions="softmax of N(0, I): torchjd's Random, exactly (same draws)",
    ),
    "sdmgrad": MethodInfo(
        paper=(
            "Xiao, Ban, Ji. Direction-oriented Multi-objective Learning: Simple and Provable "
            "Stochastic Algorithms. NeurIPS 2023"
        ),
        gradients="shared",
        options={"lamda": 0.3, "n_iter": 20},
        conventions=(
            "single-batch Gramian (paper, LibMTL: three batches); inner lr 5 as LibMTL (torchjd: "
            "10). Weights within 1e-6 of torchjd per call"
        ),
    ),
    "stch": MethodInfo(
        paper=(
            "Lin, Zhang, Yang, Zhang, Zhang. Smooth Tchebycheff Scalarization for Multi-Objective "
            "Optimization. ICML 2024"
        ),
        options={"mu": 1.0, "warmup_epochs": 4},
        conventions="as LibMTL: log losses for warmup_epochs, the next epoch's mean as nadir",
    ),
    "upgrad": MethodInfo(
        paper=_JACOBIAN_DESCENT,
        gradients="shared",
        conventions=f"{_TORCHJD_RIDGE}. Weights within 1e-6 of torchjd",
    ),
    "uw": MethodInfo(
        paper=(
            "Kendall, Gal, Cipolla. Multi-Task Learning Using Uncertainty to Weigh Losses for "
            "Scene Geometry and Semantics. CVPR 2018"
        ),
        options={"lr": 0.01},
        conventions="as LibMTL",
    ),
}

#: The methods shipped with the package; each has an implementation that registers itself.
BUILTIN = frozenset(_METHODS)

#: Methods of LibMTL or torchjd that are not offered, and why.
MISSING: dict[str, str] = {}


def _add(name: str, info: MethodInfo) -> None:
    """Describe a method registered from outside the package (the registry calls it)."""
    if name in _METHODS:
        raise ValueError(f"balancing method {name!r} is already described")
    _METHODS[name] = info


def list_methods() -> list[str]:
    return sorted(_METHODS)


def describe(name: str) -> MethodInfo:
    if name not in _METHODS:
        raise KeyError(f"unknown balancing method {name!r}; expected one of {list_methods()}")
    return _METHODS[name]


def defaults(name: str) -> dict[str, Any]:
    """The method's hyperparameters and their default values."""
    return dict(describe(name).options)


def paper(name: str) -> str:
    """The reference the method comes from."""
    return describe(name).paper


def needs_gradients(name: str) -> bool:
    """Whether the method reads the Gramian of task gradients."""
    return describe(name).gradients != "none"


def params_only(name: str) -> bool:
    """Whether the method reads the task gradients of the shared parameters only."""
    return describe(name).params_only


def reads(name: str) -> str:
    """What the method reads besides the losses, in words."""
    return describe(name).reads


def methods_markdown() -> str:
    """docs/METHODS.md: every method, its reference, defaults, inputs and conventions."""
    lines = [
        "# Balancing methods",
        "",
        "Generated by `mtlstudy methods --markdown`; do not edit by hand. *Reads* is what",
        "each method reads: the losses, validation KPIs, the Gramian `J Jᵀ` of the task",
        "gradients, or the Jacobian `J` itself, from which the method forms the shared update",
        "(on the spec's `gradient_space`). Agreements are those asserted by",
        "tests/models/balancing/test_oracles.py on 350 random and degenerate Jacobians",
        "(parallel, near-parallel, one zero gradient, exactly opposite, rank-deficient).",
        "",
        "| method | reference | defaults | reads | conventions and agreement |",
        "|---|---|---|---|---|",
    ]
    for name in list_methods():
        info = describe(name)
        hp = {k: v for k, v in info.options.items() if k != "potentials"}
        lines.append(
            f"| `{name}` | {info.paper} | `{json.dumps(hp)}` | {info.reads} | {info.conventions} |"
        )
    if MISSING:
        lines += ["", "## Not offered", "", "| method | why |", "|---|---|"]
        lines += [f"| {name} | {why} |" for name, why in MISSING.items()]
    return "\n".join(lines) + "\n"
