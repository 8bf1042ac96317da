"""The paper's concrete bundles, built through the generic FBG / FGH machinery.

* :func:`fiberpo_bundle` is App E.5.4's sign-channel bundle: ``E = X x {-1,+1}`` (tokens times
  sign), ``B = Tj x {-1,+1}``, ``pi(i, l) = (tau_i, l)``,
  ``F(r)_(i,l) = max(l log r_i, 0) / T_tau``, ``K(i, l | tau, l) = 1/T_tau``,
  ``R(sigma)_i = exp(T_tau (sigma_(i,+) - sigma_(i,-)))``,
  ``g_Fiber = clip(., +-eps/T_tau)`` and ``g_Base,(tau,l) = g_agg(., C^(l), T_tau)``.
  Through eq 4 it reproduces FiberPO's closed form (eq 80); certificate V10.
* :func:`fiberpo_domain_fgh` is App E.7's hierarchy for any chain of levels above the
  trajectories: strata ``level_0 x {+-1}, ..., Tj x {+-1}, E``, kernels
  ``K(child | parent) = |Tj(child)| / |Tj(parent)|`` (``1/T_tau`` from trajectories to
  tokens), gates ``|Tj(node)| g_agg(sigma / |Tj(node)|, C^(l), T_node)`` and, on tokens,
  ``(1/T_tau) clip(T_tau sigma, eps)``; ``F(r)_(i,l) = [l_i = l] l_i log r_i / T_tau``.
  With the levels (domain, group) it is FiberPO-Domain (eq 31); with none it is FiberPO.

Index layout. The valid tokens of the ``[B, T]`` batch (``hierarchy.mask``, row-major) are
``X = 0..n_x-1``; trajectories are the rows with at least one token; a level keeps only the
nodes that hold such a row (an empty node would have an empty fiber and no reflecting
kernel). A signed stratum over ``n`` nodes has ``2n`` points, ``c * n + node`` with channel
``c = 0`` for ``l = +1`` and ``c = 1`` for ``l = -1``.

Convention (finding F3): ``F`` uses the sign label with ``sign(0) = +1`` to pick the channel,
``where(l_i = l, l log r_i, 0)``; it equals ``max(l log r, 0)`` in value everywhere and gives the
right derivative at ``log r = 0``, the same one-sided choice as the closed form (``fiberpo/closed.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fractions import Fraction

import torch

from fibration_theory.fbg import FBG, Fibration, ReflectingKernel, pointwise
from fibration_theory.fgh import FGH
from fibration_theory.fiberpo.plan import level_budgets
from fibration_theory.validation import check_nonneg

Tensor = torch.Tensor
Budget = float | Sequence[float]

__all__ = [
    "BatchStrata",
    "batch_strata",
    "fbg_fiberpo_log_ratio",
    "fgh_fiberpo_domain_log_ratio",
    "fiberpo_bundle",
    "fiberpo_domain_fgh",
    "flatten_tokens",
    "g_agg_reference",
    "sign_channel_decompose",
    "sign_channel_recover_log",
    "unflatten_tokens",
]


def g_agg_reference(x: Tensor, c: Tensor | float, k: Tensor | float) -> Tensor:
    """Eq 10 (= eq 78), elementwise, written independently of ``fiberpo.g_agg``.

    ``x`` if ``|x| <= C``; ``sign(x)(k+1)C - k x`` if ``C < |x| < (1 + 1/k) C``; else 0.
    """
    c = torch.as_tensor(c, dtype=x.dtype)
    k = torch.as_tensor(k, dtype=x.dtype)
    ax = x.abs()
    rollback = torch.sign(x) * (k + 1) * c - k * x
    zero = torch.zeros((), dtype=x.dtype)
    return torch.where(ax <= c, x, torch.where(ax < (1 + 1 / k) * c, rollback, zero))


@dataclasses.dataclass(frozen=True)
class BatchStrata:
    """Unsigned node structure of a batch, coarse to fine, trajectories last.

    ``parents[k]``: ``[n_k]`` long, the node of level ``k-1`` holding each node of level ``k``
    (``parents[0]`` is all zeros: a single root). ``num_traj[k]``, ``num_tokens[k]``: per-node
    ``|Tj(node)|`` and ``T_node`` as python ints (exact). ``token_traj``: ``[n_x]`` trajectory
    index of each valid token; ``traj_rows``: ``[n_traj]`` batch row of each trajectory;
    ``node_of_traj[k]``: ``[n_traj]`` node of level ``k`` holding each trajectory.
    """

    parents: tuple[Tensor, ...]
    num_traj: tuple[tuple[int, ...], ...]
    num_tokens: tuple[tuple[int, ...], ...]
    node_of_traj: tuple[Tensor, ...]
    token_traj: Tensor
    traj_rows: Tensor

    @property
    def n_levels(self) -> int:
        """Number of unsigned levels including the trajectories (``L + 1``)."""
        return len(self.parents)

    @property
    def n_tokens(self) -> int:
        return int(self.token_traj.numel())

    @property
    def traj_len(self) -> tuple[int, ...]:
        return self.num_tokens[-1]

    def exact_weights(self) -> list[list[Fraction]]:
        """Kernel weights ``K(child | parent)`` of every step, exact, per signed child.

        Step ``k`` (``0 <= k < L``) goes from level ``k`` to level ``k+1`` with weight
        ``|Tj(child)| / |Tj(parent)|``; the last step goes from trajectories to tokens with
        ``1 / T_tau`` (App E.7 K0, K1, K2; App E.5.4 K). Each list has the signed layout
        (both channels carry the same weights).
        """
        out = []
        for k in range(1, self.n_levels):
            par = self.parents[k].tolist()
            w = [Fraction(self.num_traj[k][j], self.num_traj[k - 1][p]) for j, p in enumerate(par)]
            out.append(w + w)
        lens = self.traj_len
        w = [Fraction(1, lens[t]) for t in self.token_traj.tolist()]
        out.append(w + w)
        return out

    def signed_fibrations(self) -> list[Fibration]:
        """``[pi_1, ..., pi_n]`` of the signed strata (``pi_k: B_k -> B_{k-1}``)."""
        fibs = []
        for k in range(1, self.n_levels):
            fibs.append(_signed(self.parents[k], len(self.num_traj[k - 1])))
        fibs.append(_signed(self.token_traj, len(self.traj_len)))
        return fibs


def _signed(parent: Tensor, n_parent: int) -> Fibration:
    """``(c, j) -> (c, parent[j])`` on ``{+,-} x children``."""
    return Fibration(torch.cat([parent, parent + n_parent]), 2 * n_parent)


def batch_strata(hierarchy, *, levels: bool = True) -> BatchStrata:
    """Node structure of ``hierarchy`` (a ``fibration_theory.Hierarchy``).

    ``levels=False`` keeps only trajectories and tokens (App E.5.4). Uses ``hierarchy.mask``
    ``[B, T]``, ``hierarchy.lengths`` and, for each level, ``level.ids`` ``[B]``.
    """
    mask = torch.as_tensor(hierarchy.mask, dtype=torch.bool)
    lengths = mask.sum(1)
    traj_rows = (lengths > 0).nonzero().flatten()
    if traj_rows.numel() == 0:
        raise ValueError("hierarchy: the batch has no response token")
    row_to_traj = torch.full((mask.shape[0],), -1, dtype=torch.long)
    row_to_traj[traj_rows] = torch.arange(traj_rows.numel())
    token_rows = mask.nonzero()[:, 0]  # row-major order of the valid tokens
    token_traj = row_to_traj[token_rows]
    traj_len = tuple(int(v) for v in lengths[traj_rows].tolist())

    node_of_traj, parents, num_traj, num_tokens = [], [], [], []
    prev: Tensor | None = None
    level_ids = [lv.ids for lv in hierarchy.levels] if levels else []
    for ids in level_ids:
        _, node = torch.unique(torch.as_tensor(ids)[traj_rows], return_inverse=True)
        node = node.to(torch.long)
        n = int(node.max()) + 1
        node_of_traj.append(node)
        parents.append(_parent_of(node, prev, n))
        num_traj.append(tuple(int(v) for v in torch.bincount(node, minlength=n).tolist()))
        tok = torch.zeros(n, dtype=torch.long).index_add(0, node, lengths[traj_rows])
        num_tokens.append(tuple(int(v) for v in tok.tolist()))
        prev = node
    n_traj = traj_rows.numel()
    traj_node = torch.arange(n_traj)
    node_of_traj.append(traj_node)
    parents.append(_parent_of(traj_node, prev, n_traj))
    num_traj.append((1,) * n_traj)
    num_tokens.append(traj_len)
    return BatchStrata(tuple(parents), tuple(num_traj), tuple(num_tokens), tuple(node_of_traj),
                       token_traj, traj_rows)


def _parent_of(node: Tensor, prev: Tensor | None, n: int) -> Tensor:
    """Parent (in the coarser level ``prev``) of each of ``n`` nodes; nesting is assumed
    (``Hierarchy`` checks it)."""
    if prev is None:
        return torch.zeros(n, dtype=torch.long)
    parent = torch.zeros(n, dtype=torch.long)
    parent[node] = prev
    return parent


def flatten_tokens(x: Tensor, hierarchy) -> Tensor:
    """``[B, T] -> [n_x]``: the valid tokens in row-major order."""
    return x[torch.as_tensor(hierarchy.mask, dtype=torch.bool)]


def unflatten_tokens(flat: Tensor, hierarchy, fill: float = 0.0) -> Tensor:
    """``[n_x] -> [B, T]``, ``fill`` outside the mask (differentiable in ``flat``)."""
    mask = torch.as_tensor(hierarchy.mask, dtype=torch.bool)
    out = torch.full(mask.shape, fill, dtype=flat.dtype)
    return out.masked_scatter(mask, flat)


def _sign_plus(x: Tensor) -> Tensor:
    return x >= 0  # l = +1, with sign(0) = +1 (F3)


def sign_channel_decompose(traj_len: Tensor, token_traj: Tensor):
    """``F`` of App E.5.4 / E.7: ``[..., n_x] -> [..., 2 n_x]``, ``(i, l) -> [l_i = l] l x_i / T``."""
    t = traj_len.to(torch.float64)[token_traj]

    def decompose(x: Tensor) -> Tensor:
        pos = _sign_plus(x)
        zero = torch.zeros((), dtype=x.dtype)
        plus = torch.where(pos, x, zero) / t.to(x.dtype)
        minus = torch.where(pos, zero, -x) / t.to(x.dtype)
        return torch.cat([plus, minus], dim=-1)

    return decompose


def sign_channel_recover_log(traj_len: Tensor, token_traj: Tensor):
    """``log R`` of App E.5.4 / E.7: ``[..., 2 n_x] -> [..., n_x]``, ``T (sigma_+ - sigma_-)``."""
    t = traj_len.to(torch.float64)[token_traj]
    n_x = int(token_traj.numel())

    def recover_log(sigma: Tensor) -> Tensor:
        return t.to(sigma.dtype) * (sigma[..., :n_x] - sigma[..., n_x:])

    return recover_log


def _kernel(fib: Fibration, weights: list[Fraction]) -> ReflectingKernel:
    # float(Fraction) is correctly rounded, so the kernel is the exact one to 1 ulp
    return ReflectingKernel.from_weights(fib, torch.tensor([float(w) for w in weights],
                                                           dtype=torch.float64))


def _signed_values(plus: Sequence[float], minus: Sequence[float]) -> Tensor:
    return torch.tensor(list(plus) + list(minus), dtype=torch.float64)


def fiberpo_bundle(hierarchy, c_plus: float, c_minus: float, eps: float) -> FBG:
    """App E.5.4's FBG instance of FiberPO for ``hierarchy`` (trajectory level only).

    The returned :class:`FBG` acts on the flat valid log-ratios ``[..., n_x]``
    (:func:`flatten_tokens`); its ``ratio_map`` is eq 80's ``G(r)``.
    """
    c_plus, c_minus = level_budgets(c_plus, 0, "c_plus")[0], level_budgets(c_minus, 0, "c_minus")[0]
    check_nonneg(eps, "eps")
    st = batch_strata(hierarchy, levels=False)
    fib = st.signed_fibrations()[-1]
    kernel = _kernel(fib, st.exact_weights()[-1])
    lens = torch.tensor(st.traj_len, dtype=torch.float64)
    n_traj = len(st.traj_len)
    g_base = pointwise(g_agg_reference, c=_signed_values([c_plus] * n_traj, [c_minus] * n_traj),
                       k=torch.cat([lens, lens]))
    tok_len = lens[st.token_traj]
    bound = torch.cat([tok_len, tok_len]).reciprocal() * eps

    def clip_sym(x: Tensor, bound: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(x, bound), -bound)

    g_fiber = pointwise(clip_sym, bound=bound)
    return FBG(kernel, g_base, g_fiber, sign_channel_decompose(lens, st.token_traj),
               sign_channel_recover_log(lens, st.token_traj))


def _level_gate(x: Tensor, n: Tensor, c: Tensor, k: Tensor) -> Tensor:
    """``|Tj(node)| g_agg(x / |Tj(node)|, C^(l), T_node)`` (App E.7 g0, g1, g2)."""
    return n * g_agg_reference(x / n, c, k)


def _token_gate(x: Tensor, t: Tensor, eps: float) -> Tensor:
    """``(1/T_tau) clip(T_tau x, eps)`` (App E.7 g3)."""
    return (t * x).clamp(-eps, eps) / t


def fiberpo_domain_fgh(hierarchy, c_plus: Budget, c_minus: Budget, eps: float) -> FGH:
    """App E.7's FGH instance for every level of ``hierarchy`` (depth ``n = levels + 1``).

    ``c_plus``, ``c_minus``: one budget for all levels (the paper's eq 31) or one per level,
    coarse to fine, the trajectory level last (the per-level budgets of F4).
    """
    check_nonneg(eps, "eps")
    st = batch_strata(hierarchy, levels=True)
    cp = level_budgets(c_plus, st.n_levels - 1, "c_plus")
    cm = level_budgets(c_minus, st.n_levels - 1, "c_minus")
    fibs = st.signed_fibrations()
    kernels = tuple(_kernel(f, w) for f, w in zip(fibs, st.exact_weights()))
    gates = []
    for k in range(st.n_levels):
        n_nodes = len(st.num_traj[k])
        cnt = torch.tensor(st.num_traj[k], dtype=torch.float64)
        tok = torch.tensor(st.num_tokens[k], dtype=torch.float64)
        gates.append(pointwise(_level_gate, n=torch.cat([cnt, cnt]),
                               c=_signed_values([cp[k]] * n_nodes, [cm[k]] * n_nodes),
                               k=torch.cat([tok, tok])))
    lens = torch.tensor(st.traj_len, dtype=torch.float64)
    tok_len = lens[st.token_traj]
    gates.append(pointwise(_token_gate, t=torch.cat([tok_len, tok_len]), eps=float(eps)))
    return FGH(kernels, tuple(gates), sign_channel_decompose(lens, st.token_traj),
               sign_channel_recover_log(lens, st.token_traj))


def fbg_fiberpo_log_ratio(log_ratio: Tensor, hierarchy, *, c_plus: float, c_minus: float,
                          eps: float) -> Tensor:
    """``[B, T]`` ``log G(r)`` of FiberPO computed by the generic FBG (0 outside the mask)."""
    fbg = fiberpo_bundle(hierarchy, c_plus, c_minus, eps)
    return unflatten_tokens(fbg.log_ratio_map(flatten_tokens(log_ratio, hierarchy)), hierarchy)


def fgh_fiberpo_domain_log_ratio(log_ratio: Tensor, hierarchy, *, c_plus: Budget,
                                 c_minus: Budget, eps: float) -> Tensor:
    """``[B, T]`` ``log G(r)`` of FiberPO-Domain computed by the generic FGH (0 outside the mask)."""
    fgh = fiberpo_domain_fgh(hierarchy, c_plus, c_minus, eps)
    return unflatten_tokens(fgh.log_ratio_map(flatten_tokens(log_ratio, hierarchy)), hierarchy)
