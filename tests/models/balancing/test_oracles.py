"""Every method torchjd 0.18 also has, against torchjd, on 350 random and degenerate
Jacobians; MGDA against an exact QP; and every method finite on every degenerate input.

Weights are compared relative to the largest of torchjd's; where a method's weights are not
unique (rank-deficient J) the updates ``Jᵀw`` are compared, relative to the largest task
gradient. The conventions converted here are those docs/METHODS.md lists.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.linalg import solve as dense_solve
from torchjd import aggregation as jd
from torchjd.linalg import QuadprogProjector

from models import balancing
from models.balancing import gramian as gm
from models.balancing.gramian import _qp

sys.path.insert(0, str(Path(__file__).parent))
from _oracle_cases import SEEDS, case, degenerate  # noqa: E402

TOL = 1e-6
CASES = [case(seed) for seed in SEEDS]


def _weights_gap(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return (ours - theirs).abs().max().item() / max(theirs.abs().max().item(), 1e-300)


def _update_gap(J: torch.Tensor, ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """``‖Jᵀ(ours − theirs)‖`` (or against an update vector) over the largest ‖g_t‖."""
    theirs = J.T @ theirs if theirs.shape[0] == J.shape[0] else theirs
    return (J.T @ ours - theirs).norm().item() / max(J.norm(dim=1).max().item(), 1e-300)


def _worst(compare: Callable[[int, str, torch.Tensor], float], kinds: set[str] | None = None):
    worst, seen = 0.0, 0
    for seed, (kind, J) in zip(SEEDS, CASES, strict=True):
        if kinds is None or kind in kinds:
            worst = max(worst, compare(seed, kind, J))
            seen += 1
    return worst, seen


def test_the_cases_cover_every_degenerate_kind() -> None:
    kinds = {kind for kind, _ in CASES}
    assert {"parallel", "near_parallel", "one_zero", "opposite", "rank_deficient"} <= kinds
    assert len(CASES) >= 300


def test_upgrad_matches_torchjd_with_the_same_ridge() -> None:
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        G = J @ J.T
        # torchjd's ridge is on G/trace; this QP's on G/(trace/T): reg_eps = RIDGE/T.
        projector = QuadprogProjector(norm_eps=0.0, reg_eps=_qp.RIDGE / G.shape[0])
        theirs = jd.UPGradWeighting(projector=projector)(G)
        return _weights_gap(gm.upgrad_weights(G), theirs)

    worst, seen = _worst(gap)
    assert seen == len(CASES) and worst <= TOL


def test_aligned_mtl_is_torchjds_times_t() -> None:
    # torchjd's default preference is the mean (1/T); the project sums the aligned gradients.
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        G = J @ J.T
        ours = gm.aligned_mtl_weights(G) / G.shape[0]
        return _update_gap(J, ours, jd.AlignedMTLWeighting()(G))

    worst, _ = _worst(gap)
    assert worst <= TOL


def test_pcgrad_matches_torchjd_with_the_same_draws() -> None:
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        G = J @ J.T
        torch.manual_seed(seed)  # torchjd draws its orders from the global generator
        theirs = jd.PCGradWeighting()(G)
        return _weights_gap(gm.pcgrad_weights(G, torch.Generator().manual_seed(seed)), theirs)

    worst, _ = _worst(gap)
    assert worst <= TOL


@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_graddrop_matches_torchjd_with_the_same_draws(leak: float) -> None:
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        tasks = [f"t{i}" for i in range(J.shape[0])]
        ours = balancing.create("graddrop", tasks, leak=leak)
        ours.generator.manual_seed(seed)
        mine = ours.direction(torch.ones(len(tasks), dtype=J.dtype), J)
        torch.manual_seed(seed)  # torchjd draws its uniforms from the global generator
        theirs = jd.GradDrop(leak=torch.full((len(tasks),), leak, dtype=J.dtype))(J)
        return (mine - theirs).norm().item() / max(J.norm(dim=1).max().item(), 1e-300)

    worst, seen = _worst(gap)
    assert seen == len(CASES) and worst <= TOL


def test_imtl_g_matches_torchjd_where_its_weights_are_unique() -> None:
    # On singular Gramians (parallel, opposite, rank-deficient) the equal-projection system
    # has many solutions: torchjd takes pinv(G)·‖g‖, the project the least-norm solution of
    # the scale-free system, so they differ there (docs/METHODS.md).
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        G = J @ J.T
        return _weights_gap(gm.imtl_g_weights(G), jd.IMTLGWeighting()(G))

    worst, seen = _worst(gap, {"random", "conflicting", "one_zero", "near_parallel"})
    assert seen >= 200 and worst <= TOL


def test_config_matches_torchjds_update() -> None:
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        return _update_gap(J, gm.config_weights(J @ J.T), jd.ConFIG()(J))

    worst, _ = _worst(gap)
    assert worst <= TOL


def test_fairgrad_matches_torchjd_and_solves_its_equation_exactly() -> None:
    # torchjd (as LibMTL) stops scipy's least_squares at its default tolerance, 1e-8.
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        G = J @ J.T
        alpha = (0.5, 1.0, 2.0)[seed % 3]
        ours = gm.fairgrad_weights(G, alpha)
        keep = G.diagonal() > 0
        residual = (G @ ours)[keep] * ours[keep] ** (1 / alpha) - 1
        assert residual.abs().max().item() <= 1e-9
        return _weights_gap(ours, jd.FairGradWeighting(alpha)(G))

    worst, seen = _worst(gap, {"random", "conflicting", "near_parallel"})
    assert seen >= 150 and worst <= TOL


def test_gradvac_follows_torchjd_over_steps() -> None:
    # Exactly opposite gradients have cosine −1 to rounding, and the correction's √(1 − φ²)
    # is the square root of that rounding: from the second step on (target −½) the two
    # differ by up to 100 %, so opposite pairs are compared on the first step only.
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        T = J.shape[0]
        theirs, generator = jd.GradVacWeighting(beta=0.5), torch.Generator().manual_seed(seed)
        targets = torch.zeros(T, T, dtype=torch.float64)
        torch.manual_seed(seed)
        worst = 0.0
        for step in range(1 if kind == "opposite" else 2):
            G = (J + 0.3 * step * J.roll(1, 0)) @ (J + 0.3 * step * J.roll(1, 0)).T
            ours, targets = gm.gradvac_weights(G, targets, generator, beta=0.5)
            worst = max(worst, _weights_gap(ours, theirs(G)))
        return worst

    worst, _ = _worst(gap)
    assert worst <= TOL


def test_modo_and_sdmgrad_match_torchjd_step_by_step() -> None:
    # SDMGrad's inner loop (lr 5, as LibMTL) amplifies rounding over many calls, so each call
    # starts from torchjd's state; MoDo's single step is followed over three calls.
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        T = J.shape[0]
        modo, sdm = jd.MoDoWeighting(gamma=1e-3, rho=0.1), jd.SDMGradWeighting(lr=5.0)
        lam = torch.full((T,), 1 / T, dtype=torch.float64)
        worst = 0.0
        for step in range(3):
            G = (1 + step) * (J @ J.T)
            lam = gm.modo_weights(G, lam, gamma=1e-3, rho=0.1)
            worst = max(worst, _weights_gap(lam, modo(G)))
            start = sdm._w if sdm._w is not None else torch.full((T,), 1 / T, dtype=torch.float64)
            ours, _ = gm.sdmgrad_weights(G, start.clone(), lamda=0.3, n_iter=20)
            worst = max(worst, _weights_gap(ours, sdm(G)))
        return worst

    worst, _ = _worst(gap)
    assert worst <= TOL


def test_loss_level_aggregators_match_torchjd() -> None:
    for seed, (_, J) in zip(SEEDS, CASES, strict=True):
        T = J.shape[0]
        G, tasks = J @ J.T, [f"t{i}" for i in range(T)]
        losses = torch.ones(T, dtype=torch.float64)
        assert torch.equal(balancing.create("ew", tasks).weights(losses), jd.SumWeighting()(G))
        mean = balancing.create("mean", tasks).weights(losses).double()
        assert _weights_gap(mean, jd.MeanWeighting()(G)) <= 1e-15
        fixed = torch.rand(T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        ours = balancing.create("fixed", tasks, weights=fixed.tolist()).weights(losses.double())
        # fixed keeps its weights in float32.
        assert _weights_gap(ours, jd.ConstantWeighting(fixed)(G)) <= TOL
        rlw = balancing.create("rlw", tasks)
        rlw.generator.manual_seed(seed)
        torch.manual_seed(seed)
        assert _weights_gap(rlw.weights(losses.double()), jd.RandomWeighting()(G)) <= 1e-15


@pytest.mark.slow  # cvxpy's conic solvers: about a minute each over the 350 cases
def test_cagrad_matches_torchjds_conic_solution() -> None:
    """torchjd solves CAGrad's dual with cvxpy's CLARABEL, to its interior-point accuracy;
    here the dual is solved exactly, so its objective is never above torchjd's. Weights are
    compared without the official ``1 + c²`` rescale, which torchjd leaves out.

    Where 0 is in the gradients' hull (a zero task gradient) ‖g_w‖ = 0: the official code
    then takes the mean gradient, as here, and torchjd a zero update, so those are left out;
    so are exactly opposite gradients, where the dual has a continuum of solutions."""
    pytest.importorskip("cvxpy")

    def dual(G: torch.Tensor, w: np.ndarray, c: float) -> float:
        A = G.numpy()
        T = A.shape[0]
        phi = c * math.sqrt(A.sum()) / T
        return float(w @ A.sum(1) / T + phi * math.sqrt(max(w @ A @ w, 0.0)))

    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        G, c = J @ J.T, (0.2, 0.5, 0.9)[seed % 3]
        ours, w_star = gm.cagrad_weights(G, c=c)
        theirs = jd.CAGradWeighting(c=c)(G)
        # torchjd's weights are 1/T + (φ/‖g_w‖)·w: its w is their excess, normalised.
        excess = (theirs - 1 / G.shape[0]).numpy().clip(min=0)  # its solver's rounding
        if excess.sum() > 1e-9:
            scale = max(abs(dual(G, excess / excess.sum(), c)), 1e-300)
            assert dual(G, w_star.numpy(), c) <= dual(G, excess / excess.sum(), c) + 1e-9 * scale
        return _update_gap(J, ours * (1 + c**2), theirs)

    worst, seen = _worst(
        gap, {"random", "conflicting", "parallel", "near_parallel", "rank_deficient"}
    )
    assert seen >= 250 and worst <= 1e-4


@pytest.mark.slow
def test_nash_mtl_matches_torchjd_where_its_solver_converges() -> None:
    """torchjd (as the official code) runs 20 steps of a sequential convex programme with
    cvxpy, which on many Gramians stops short of the bargaining equation α ⊙ Gα = 1 (on
    some it returns its starting point). Where torchjd's α satisfies it to 1e-6 the two
    agree, and the project's satisfies it to 1e-9."""
    pytest.importorskip("ecos")
    from torchjd.aggregation._nash_mtl import _NashMTLWeighting

    def residual(alpha: torch.Tensor, G: torch.Tensor) -> float:
        keep = G.diagonal() > 0
        return ((alpha * (G @ alpha))[keep] - 1).abs().max().item()

    converged = 0
    for seed, (kind, J) in zip(SEEDS, CASES, strict=True):
        G = J @ J.T
        ours = gm.nash_mtl_weights(G)
        theirs = _NashMTLWeighting(
            n_tasks=G.shape[0], max_norm=math.inf, update_weights_every=1, optim_niter=20
        )(J)
        if residual(theirs, G) <= 1e-6:
            converged += 1
            assert residual(ours, G) <= 1e-9, (seed, kind)
            assert _weights_gap(ours, theirs) <= 1e-5, (seed, kind)
    assert converged >= 100


def _exact_min_norm(G: np.ndarray) -> np.ndarray:
    """MGDA's min-norm point of the hull, by trying every support (T ≤ 7)."""
    T = G.shape[0]
    best, best_value = np.full(T, 1 / T), math.inf
    scale = np.trace(G) / T or 1.0
    for size in range(1, T + 1):
        for support in itertools.combinations(range(T), size):
            idx = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = G[np.ix_(idx, idx)] / scale
            kkt[:size, size] = kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            try:
                x = dense_solve(kkt, rhs, assume_a="sym")
            except (np.linalg.LinAlgError, ValueError):
                continue
            if not np.isfinite(x).all() or (x[:size] < -1e-12).any():
                continue
            w = np.zeros(T)
            w[idx] = np.maximum(x[:size], 0) / np.maximum(x[:size], 0).sum()
            value = float(w @ G @ w)
            if value < best_value:
                best, best_value = w, value
    return best


def test_mgda_matches_an_exact_qp() -> None:
    def gap(seed: int, kind: str, J: torch.Tensor) -> float:
        G = J @ J.T
        exact = torch.from_numpy(_exact_min_norm(G.numpy()))
        return _update_gap(J, gm.mgda_weights(G), exact)

    worst, _ = _worst(gap)
    assert worst <= TOL


POTENTIALS = {f"t{i}": 0.5 for i in range(7)}


@pytest.mark.parametrize("method", balancing.list_methods())
def test_every_method_is_finite_on_every_degenerate_input(method: str) -> None:
    for _, (kind, J) in zip(SEEDS, CASES, strict=True):
        if not degenerate(kind):
            continue
        T = J.shape[0]
        tasks = [f"t{i}" for i in range(T)]
        hp = {"potentials": POTENTIALS} if "potentials" in balancing.defaults(method) else {}
        balancer = balancing.create(method, tasks, **hp)
        balancer.update_kpis({t: 0.4 for t in tasks})
        G = J @ J.T if balancing.needs_gradients(method) else None
        losses = torch.rand(T, generator=torch.Generator().manual_seed(T)) + 0.1
        for _ in range(2):
            if balancer.gradients == "jacobian":
                assert torch.isfinite(balancer.direction(losses, J)).all(), kind
            total = balancer.combine(losses, G)
            assert torch.isfinite(total) and torch.isfinite(balancer.last_weights).all(), kind
