"""Fibration Gating Hierarchy, the generic reference (Defs 6.1-6.2, eqs 21-29, Remark 6.3).

A uniform fibration hierarchy of depth ``n`` is a chain of finite strata
``B_0 <- B_1 <- ... <- B_n = E`` (eq 21) with projections ``pi_k: B_k -> B_{k-1}`` and their
pushforwards (eq 22). The FGH adds reflecting kernels ``K_k: B_k -> B_{k+1}``
(``pi_{k+1,*} K_k = id``, condition (i)), one atomic gate per stratum ``g_k`` (which may read
the coarser densities ``p_<k``, Object 3) and the maps ``F``, ``R`` of FBG (Object 4).

The gating function (eq 26, compact form eqs 27-28) pushes ``sigma`` down to every stratum,
subtracts what the stratum below already accounts for, gates the residual and reflects
everything back to ``E``:

    G(sigma) = sum_k K_{n<-k} G_k(pi_{k<-n,*} sigma),
    G_0(s) = g_0(s),   G_k(s) = g_k,p_<k(s - K_{k-1} pi_{k,*} s).

``n = 1`` is FBG (Remark 6.3): ``B_0 = B``, ``g_0 = g_Base``, ``g_1 = g_Fiber`` with context
``(p_B,)``. Densities are float64 tensors ``[..., n_k]``; maps are dense matrices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from fibration_theory.fbg import FBG, Decompose, Fibration, Gate, RecoverLog, ReflectingKernel

Tensor = torch.Tensor

__all__ = ["FGH", "kernel_chain", "push_chain"]


def kernel_chain(kernels: Sequence[ReflectingKernel], m: int, k: int) -> Tensor:
    """``K_{m<-k} = K_{m-1} o ... o K_k`` (eq 23) as a ``[n_m, n_k]`` matrix; identity if m = k."""
    if k > m:
        raise ValueError(f"kernel_chain needs k <= m, got k={k}, m={m}")
    n_k = kernels[k].fibration.n_base if k < len(kernels) else kernels[-1].fibration.n_total
    out = torch.eye(n_k, dtype=torch.float64)
    for j in range(k, m):
        out = kernels[j].matrix @ out
    return out


def push_chain(fibrations: Sequence[Fibration], k: int, m: int) -> Tensor:
    """``pi_{k<-m,*} = pi_{k+1,*} o ... o pi_{m,*}`` (eq 25) as ``[n_k, n_m]``; ``fibrations[j-1]``
    is ``pi_j``."""
    if k > m:
        raise ValueError(f"push_chain needs k <= m, got k={k}, m={m}")
    n_m = fibrations[m - 1].n_total if m > 0 else fibrations[0].n_base
    out = torch.eye(n_m, dtype=torch.float64)
    for j in range(m, k, -1):
        out = fibrations[j - 1].matrix @ out
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class FGH:
    """A Fibration Gating Hierarchy of depth ``n = len(kernels)`` (Def 6.2).

    ``kernels[k]`` is ``K_k: B_k -> B_{k+1}``, carrying the fibration ``pi_{k+1}`` as
    ``kernels[k].fibration`` (its ``n_base`` is ``|B_k|``, its ``n_total`` is ``|B_{k+1}|``);
    each is reflecting by construction. ``gates[k]`` is ``g_k``, called as
    ``gates[k](x, (p_0, ..., p_{k-1}))``; there are ``n + 1`` of them.
    """

    kernels: tuple[ReflectingKernel, ...]
    gates: tuple[Gate, ...]
    decompose: Decompose
    recover_log: RecoverLog

    def __post_init__(self) -> None:
        kernels, gates = tuple(self.kernels), tuple(self.gates)
        if not kernels:
            raise ValueError("kernels must hold at least one kernel (depth n >= 1)")
        if len(gates) != len(kernels) + 1:
            raise ValueError(f"gates must hold n + 1 = {len(kernels) + 1} gates, got {len(gates)}")
        for k in range(1, len(kernels)):
            below, above = kernels[k - 1].fibration, kernels[k].fibration
            if below.n_total != above.n_base:
                raise ValueError(f"kernels[{k - 1}] maps into a stratum of size {below.n_total} "
                                 f"but kernels[{k}] starts from one of size {above.n_base}")
        object.__setattr__(self, "kernels", kernels)
        object.__setattr__(self, "gates", gates)

    @classmethod
    def from_fbg(cls, fbg: FBG) -> FGH:
        """Remark 6.3: the depth-1 hierarchy ``E -> B`` with ``g_0 = g_Base``, ``g_1 = g_Fiber``."""
        return cls((fbg.kernel,), (fbg.g_base, fbg.g_fiber), fbg.decompose, fbg.recover_log)

    @property
    def depth(self) -> int:
        return len(self.kernels)

    @property
    def fibrations(self) -> tuple[Fibration, ...]:
        """``(pi_1, ..., pi_n)``."""
        return tuple(k.fibration for k in self.kernels)

    @property
    def sizes(self) -> tuple[int, ...]:
        """``(|B_0|, ..., |B_n|)``."""
        return (self.kernels[0].fibration.n_base,) + tuple(k.fibration.n_total
                                                           for k in self.kernels)

    def strata(self, sigma: Tensor) -> list[Tensor]:
        """``[p_0, ..., p_n]`` with ``p_k = pi_{k<-n,*} sigma`` (eq 22); ``p_n = sigma``."""
        out = [sigma]
        for fib in reversed(self.fibrations):
            out.append(fib.push(out[-1]))
        return out[::-1]

    def residuals(self, sigma: Tensor) -> list[Tensor]:
        """Per-stratum inputs of the gates (eq 28): ``p_0`` and ``p_k - K_{k-1} p_{k-1}``."""
        p = self.strata(sigma)
        return [p[0]] + [p[k] - self.kernels[k - 1].reflect(p[k - 1])
                         for k in range(1, self.depth + 1)]

    def gate(self, sigma: Tensor) -> Tensor:
        """``G(sigma)`` by the compact form (eqs 27-28), reflected level by level.

        ``acc_0 = G_0``, ``acc_k = K_{k-1} acc_{k-1} + G_k``; ``acc_n = sum_k K_{n<-k} G_k``.
        """
        p = self.strata(sigma)
        res = self.residuals(sigma)
        acc = self.gates[0](res[0], ())
        for k in range(1, self.depth + 1):
            acc = self.kernels[k - 1].reflect(acc) + self.gates[k](res[k], tuple(p[:k]))
        return acc

    def gate_eq26(self, sigma: Tensor) -> Tensor:
        """``G(sigma)`` as eq 26 prints it, with the composed maps ``K_{n<-k}``, ``pi_{k<-n,*}``.

        Kept separate from :meth:`gate` so that the two forms check each other.
        """
        n = self.depth
        fibs, kers = self.fibrations, self.kernels
        lower = [sigma @ push_chain(fibs, j, n).T.to(sigma.dtype) for j in range(n + 1)]
        out = self.gates[0](lower[0], ()) @ kernel_chain(kers, n, 0).T.to(sigma.dtype)
        for k in range(1, n + 1):
            pushed = lower[k]
            below = lower[k - 1] @ kers[k - 1].matrix.T.to(sigma.dtype)
            gated = self.gates[k](pushed - below, tuple(lower[:k]))
            out = out + gated @ kernel_chain(kers, n, k).T.to(sigma.dtype)
        return out

    def log_ratio_map(self, log_ratio: Tensor) -> Tensor:
        """``log(R o G o F)(r)``: ``[..., n_x] -> [..., n_x]`` (eq 29's gating map, in log space)."""
        return self.recover_log(self.gate(self.decompose(log_ratio)))

    def ratio_map(self, log_ratio: Tensor) -> Tensor:
        """``G(r) = R o G o F (r)``, ``[..., n_x]``."""
        return self.log_ratio_map(log_ratio).exp()

    def surrogate(self, log_ratio: Tensor, advantages: Tensor, weights: Tensor) -> Tensor:
        """FGH surrogate (eq 29): ``sum_i mu_i (R o G o F)(r)_i A_i`` over the last axis."""
        return (weights * self.ratio_map(log_ratio) * advantages).sum(-1)

    def to_fbg(self) -> FBG:
        """The FBG of a depth-1 hierarchy (Remark 6.3); ``ValueError`` for ``n > 1``."""
        if self.depth != 1:
            raise ValueError(f"only a depth-1 FGH is an FBG, this one has depth {self.depth}")
        return FBG(self.kernels[0], self.gates[0], self.gates[1], self.decompose,
                   self.recover_log)
