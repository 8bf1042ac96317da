"""Fiber Bundle Gating, the generic reference (Def 4.3, eq 4; Def 4.4, eq 5; Thm 4.5; App E.3).

Everything here is finite: the total space ``E`` and the base ``B`` are index sets
``0..n_E-1`` and ``0..n_B-1``, a density is a ``float64`` tensor ``[..., n]`` (leading batch
dimensions allowed), and the linear maps are dense matrices. This is the slow, obviously
correct reference against which FiberPO's closed forms (``fiberpo/closed.py``) are tested; it knows
nothing about FiberPO. The concrete bundles of App E.5.4 and E.7 live in ``bundles.py``.

Objects (Def 4.3):

* :class:`Fibration` ``pi: E -> B`` and its pushforward ``(pi_* sigma)_b = sum_{pi(i)=b} sigma_i``;
* :class:`ReflectingKernel` ``K: B -> E``, a Markov kernel with ``pi_* o K = id_B`` (checked
  at construction; ``ValueError`` otherwise);
* atomic gates: any callable ``gate(x, context) -> y`` acting pointwise on ``x [..., n]``;
  ``context`` is the tuple of coarser densities the gate may read (``(p_B,)`` for the fiber
  gate of eq 4, ``()`` for the base gate). :func:`pointwise` builds one from an elementwise
  function and per-point parameters, which makes the locality condition hold by construction;
* the decomposition ``F`` and recovery ``R`` maps, here in log coordinates:
  ``decompose(log r) -> sigma`` is ``F o exp`` and ``recover_log(sigma) -> log R(sigma)``, so
  the gated ratio is ``exp(recover_log(G(decompose(log r))))`` and never overflows early.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch

Tensor = torch.Tensor
Gate = Callable[[Tensor, tuple[Tensor, ...]], Tensor]
Decompose = Callable[[Tensor], Tensor]
RecoverLog = Callable[[Tensor], Tensor]

# pi_* K = id is a sum of at most n_E float64 products of order 1; 1e-12 leaves room for
# fibers of tens of thousands of points while still catching any kernel that leaks mass.
REFLECT_ATOL = 1e-12

__all__ = [
    "FBG",
    "REFLECT_ATOL",
    "Fibration",
    "ReflectingKernel",
    "identity_gate",
    "pointwise",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Fibration:
    """A projection ``pi: E -> B`` between finite index sets (Def E.1, trivial bundle).

    ``proj``: ``[n_total]`` long, ``proj[i] = pi(i)`` in ``0..n_base-1``. Every base point must
    have a nonempty fiber (a surjection), else no reflecting kernel can exist.
    """

    proj: Tensor
    n_base: int

    def __post_init__(self) -> None:
        proj = torch.as_tensor(self.proj)
        if proj.dim() != 1 or proj.is_floating_point() or proj.dtype == torch.bool:
            raise ValueError(f"proj must be a 1-D integer tensor, got {proj.dtype} "
                             f"{tuple(proj.shape)}")
        if self.n_base < 1:
            raise ValueError(f"n_base must be >= 1, got {self.n_base}")
        if proj.numel() and (int(proj.min()) < 0 or int(proj.max()) >= self.n_base):
            raise ValueError(f"proj must take values in 0..{self.n_base - 1}, got "
                             f"range [{int(proj.min())}, {int(proj.max())}]")
        sizes = torch.bincount(proj, minlength=self.n_base)
        if bool((sizes == 0).any()):
            empty = (sizes == 0).nonzero().flatten().tolist()
            raise ValueError(f"proj is not surjective: base points {empty} have empty fibers")
        object.__setattr__(self, "proj", proj.to(torch.long))

    @property
    def n_total(self) -> int:
        return int(self.proj.numel())

    @property
    def matrix(self) -> Tensor:
        """``[n_base, n_total]`` float64 0/1 matrix ``P`` of the pushforward ``pi_*``."""
        m = torch.zeros(self.n_base, self.n_total, dtype=torch.float64)
        m[self.proj, torch.arange(self.n_total)] = 1.0
        return m

    def push(self, sigma: Tensor) -> Tensor:
        """Pushforward ``pi_*``: ``[..., n_total] -> [..., n_base]``, summing each fiber."""
        _check_last(sigma, self.n_total, "sigma")
        return sigma @ self.matrix.to(sigma.dtype).T


@dataclasses.dataclass(frozen=True, eq=False)
class ReflectingKernel:
    """Markov kernel ``K: B -> E`` with the reflecting condition ``pi_* o K = id_B`` (Def 4.3.3).

    ``matrix``: ``[n_total, n_base]`` float64, ``matrix[i, b] = K(i | b)``. Construction raises
    ``ValueError`` unless every entry is finite and ``>= 0`` (Markov) and
    ``max |P K - I| <= REFLECT_ATOL``. With nonnegative entries the condition forces
    ``K(. | b)`` to be a probability vector supported on the fiber over ``b``.
    """

    fibration: Fibration
    matrix: Tensor
    atol: float = REFLECT_ATOL

    def __post_init__(self) -> None:
        k = torch.as_tensor(self.matrix, dtype=torch.float64)
        shape = (self.fibration.n_total, self.fibration.n_base)
        if tuple(k.shape) != shape:
            raise ValueError(f"matrix has shape {tuple(k.shape)}, expected {shape} "
                             "([n_total, n_base], entry [i, b] = K(i | b))")
        if not bool(torch.isfinite(k).all()):
            raise ValueError("matrix holds non-finite entries")
        if bool((k < 0).any()):
            i, b = (int(v) for v in (k < 0).nonzero()[0])
            raise ValueError(f"matrix is not a Markov kernel: K({i} | {b}) = {float(k[i, b])} < 0")
        defect = self.fibration.matrix @ k - torch.eye(shape[1], dtype=torch.float64)
        worst = float(defect.abs().max())
        if worst > self.atol:
            b_bad = int(defect.abs().max(dim=0).values.argmax())
            raise ValueError(f"matrix violates the reflecting condition pi_* K = id: "
                             f"max |P K - I| = {worst:.3e} > {self.atol:.0e} (column b = {b_bad})")
        object.__setattr__(self, "matrix", k)

    @classmethod
    def from_weights(cls, fibration: Fibration, weights: Tensor) -> ReflectingKernel:
        """Kernel supported on fibers: ``K(i | b) = weights[i] * [pi(i) = b]``.

        ``weights``: ``[n_total]``; reflecting iff the weights of every fiber sum to 1.
        """
        w = torch.as_tensor(weights, dtype=torch.float64)
        _check_last(w, fibration.n_total, "weights")
        m = torch.zeros(fibration.n_total, fibration.n_base, dtype=torch.float64)
        m[torch.arange(fibration.n_total), fibration.proj] = w
        return cls(fibration, m)

    def reflect(self, p: Tensor) -> Tensor:
        """``K``: ``[..., n_base] -> [..., n_total]``."""
        _check_last(p, self.fibration.n_base, "p")
        return p @ self.matrix.to(p.dtype).T

    def defect(self) -> float:
        """``max |P K - I|`` (0 up to rounding for a valid kernel)."""
        eye = torch.eye(self.fibration.n_base, dtype=torch.float64)
        return float((self.fibration.matrix @ self.matrix - eye).abs().max())


def pointwise(fn: Callable[..., Tensor], **params: Tensor | float) -> Gate:
    """An atomic gate ``x -> fn(x, **params)`` applied entry by entry (locality, FGH (iii)).

    ``params`` are scalars or ``[n]`` tensors of per-point parameters (for example the
    budget ``C^(l)`` and count ``T`` of each base point); ``fn`` must be elementwise. The
    gate ignores its context: it is the same map for every coarser density.
    """
    frozen: Mapping[str, Tensor | float] = dict(params)

    def gate(x: Tensor, context: tuple[Tensor, ...] = ()) -> Tensor:
        del context
        kw = {k: (v.to(x.dtype) if isinstance(v, Tensor) else v) for k, v in frozen.items()}
        out = fn(x, **kw)
        if out.shape != x.shape:
            raise ValueError(f"gate {getattr(fn, '__name__', fn)!r} changed the shape "
                             f"{tuple(x.shape)} -> {tuple(out.shape)}")
        return out

    gate.params = frozen  # type: ignore[attr-defined]
    return gate


def identity_gate(x: Tensor, context: tuple[Tensor, ...] = ()) -> Tensor:
    """The identity atomic gate (meets Thm 4.5's identity conditions everywhere)."""
    del context
    return x


@dataclasses.dataclass(frozen=True, eq=False)
class FBG:
    """A Fiber Bundle Gating instance ``(E, B, pi_E, K, g_Base, g_Fiber; F, R)`` (Def 4.3).

    ``kernel`` carries ``pi_E`` (``kernel.fibration``). ``decompose`` maps log-ratios
    ``[..., n_x]`` to densities ``[..., n_E]``; ``recover_log`` maps densities back to
    log-ratios; ``R o F = id`` is the user's responsibility (see :meth:`recovery_residual`).
    """

    kernel: ReflectingKernel
    g_base: Gate
    g_fiber: Gate
    decompose: Decompose
    recover_log: RecoverLog

    @property
    def fibration(self) -> Fibration:
        return self.kernel.fibration

    def components(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(p_B, base part, fiber part)`` of eq 4 for ``sigma [..., n_E]``.

        ``p_B = pi_* sigma``; base part ``K(g_Base(p_B))``; fiber part
        ``g_Fiber,p_B(sigma - K(p_B))``. Their sum is ``G(sigma)``.
        """
        p = self.fibration.push(sigma)
        base = self.kernel.reflect(self.g_base(p, ()))
        residual = sigma - self.kernel.reflect(p)
        fiber = self.g_fiber(residual, (p,))
        return p, base, fiber

    def gate(self, sigma: Tensor) -> Tensor:
        """The FBG gating function ``G(sigma)`` of eq 4: ``[..., n_E] -> [..., n_E]``."""
        _, base, fiber = self.components(sigma)
        return base + fiber

    def log_ratio_map(self, log_ratio: Tensor) -> Tensor:
        """``log G(r) = log R(G(F(r)))`` (Def 4.4): ``[..., n_x] -> [..., n_x]``."""
        return self.recover_log(self.gate(self.decompose(log_ratio)))

    def ratio_map(self, log_ratio: Tensor) -> Tensor:
        """The induced ratio gating map ``G(r) = R o G o F (r)`` of Def 4.4, ``[..., n_x]``."""
        return self.log_ratio_map(log_ratio).exp()

    def surrogate(self, log_ratio: Tensor, advantages: Tensor, weights: Tensor) -> Tensor:
        """FBG surrogate in RGF form (eq 5 / eq 2): ``sum_i mu_i G(r)_i A_i`` over the last axis.

        ``weights`` ``mu`` is ``1/T_tau`` in eq 5 (``1/(|Tj| T_tau)`` in eq 6); all three
        tensors are ``[..., n_x]``.
        """
        return (weights * self.ratio_map(log_ratio) * advantages).sum(-1)

    def recovery_residual(self, log_ratio: Tensor) -> float:
        """``max |log R(F(r)) - log r|``: 0 when ``R`` is a left inverse of ``F`` at ``r``."""
        return float((self.recover_log(self.decompose(log_ratio)) - log_ratio).abs().max())


def _check_last(x: Tensor, n: int, name: str) -> None:
    if x.dim() < 1 or x.shape[-1] != n:
        raise ValueError(f"{name} must have last dimension {n}, got shape {tuple(x.shape)}")
