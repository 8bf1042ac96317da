"""Regime statistics of FiberPO's gate (Section 5.1-5.2, Fig 3), one set for every path.

The closed form and the fast path both reduce one gate evaluation to a few ``[B]``-sized
numbers per row: the channel regime of ``g_agg`` (eq 10) at every gated level and in both sign
channels, the number of tokens whose fiber residual reaches ``eps`` (``|u_i| >= eps``, eq 14),
the number of tokens clipped by the fiber gate (``|u_i| >= eps`` or ``|v_i| >= eps``, eqs
14-16), ``T_tau`` and ``log w`` (eqs 8, 31). :class:`Regimes` holds them (in numpy, on the
host) and derives everything else: the global and local labels of
:mod:`fibration_theory.regimes`, their occupancy, and the metrics of the FiberPO objectives.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fibration_theory import regimes as _rg

Tensor = torch.Tensor

__all__ = ["Regimes"]

_CPU = torch.device("cpu")

# 3 * regime(+) + regime(-) -> index of regimes.GLOBAL_LABELS
_GLOBAL_TABLE = _rg.global_regime(torch.arange(3).repeat_interleave(3),
                                  torch.arange(3).repeat(3)).numpy()


@dataclasses.dataclass(frozen=True, eq=False)
class Regimes:
    """Per-row regime statistics of one gate evaluation.

    ``codes``: ``[L, 2, B]`` int channel regimes (0 pass-through, 1 rollback, 2 zeroed) per
    gated level (coarse to fine, trajectory last) and channel (``+``, ``-``); ``n_eps``,
    ``n_clip``, ``lengths``, ``log_w``: ``[B]`` float64 (see the module docstring);
    ``names``: the levels' names; ``drifts``: per level the ``[B]`` arguments
    ``(x+, x-)`` of ``g_agg`` (the drift from the level above, eq 31), in the ratio dtype;
    ``device``: where the tensor views below live.
    """

    codes: np.ndarray
    n_eps: np.ndarray
    n_clip: np.ndarray
    lengths: np.ndarray
    log_w: np.ndarray
    names: tuple[str, ...]
    drifts: list[tuple[Tensor, Tensor]]
    device: torch.device = _CPU

    @classmethod
    def from_tensors(cls, codes: Tensor, n_eps: Tensor, n_clip: Tensor, lengths: Tensor,
                     log_w: Tensor, names: tuple[str, ...],
                     drifts: list[tuple[Tensor, Tensor]]) -> Regimes:
        """From torch tensors (``codes`` ``[L, 2, B]``, the rest ``[B]``): one host transfer."""
        f64 = torch.float64
        packed = torch.cat([codes.reshape(-1, codes.shape[-1]).to(f64),
                            torch.stack([n_eps.to(f64), n_clip.to(f64), lengths.to(f64),
                                         log_w.to(f64)])]).cpu().numpy()
        n = codes.shape[0] * 2
        return cls(packed[:n].astype(np.int64).reshape(codes.shape), *packed[n:], tuple(names),
                   drifts, lengths.device)

    # ------------------------------------------------------------------ per-row labels
    @property
    def valid_np(self) -> np.ndarray:
        return self.lengths > 0

    def _global_np(self) -> np.ndarray:
        """``[L, B]`` index of ``GLOBAL_LABELS`` per level."""
        return _GLOBAL_TABLE[self.codes[:, 0] * 3 + self.codes[:, 1]]

    def _local_np(self) -> np.ndarray:
        """``[B]`` index of ``LOCAL_LABELS``: L-I no token at ``eps``, L-III all (empty rows
        get L-I)."""
        n = self.n_eps
        return np.where(n == 0, 0, np.where(n == self.lengths, 2, 1))

    def _torch(self, a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    @property
    def per_level(self) -> list[Tensor]:
        """``[B]`` long global label per level (coarse to fine, trajectory last)."""
        return [self._torch(g) for g in self._global_np()]

    @property
    def global_(self) -> Tensor:
        """``[B]`` long global label of the trajectory level."""
        return self._torch(self._global_np()[-1])

    @property
    def local(self) -> Tensor:
        """``[B]`` long local label."""
        return self._torch(self._local_np())

    @property
    def channel(self) -> list[tuple[Tensor, Tensor]]:
        """Per level ``([B] regime+, [B] regime-)``, long (0 P, 1 R, 2 Z)."""
        return [(self._torch(c[0]), self._torch(c[1])) for c in self.codes]

    @property
    def valid(self) -> Tensor:
        """``[B]`` bool, rows with at least one token."""
        return self._torch(self.valid_np)

    def labels(self) -> tuple[list[str], list[str]]:
        """Readable ``(global, local)`` labels per row."""
        return ([_rg.GLOBAL_LABELS[i] for i in self._global_np()[-1].tolist()],
                [_rg.LOCAL_LABELS[i] for i in self._local_np().tolist()])

    # ------------------------------------------------------------------ fractions
    def occupancy(self) -> dict[str, float]:
        """Fractions of valid rows per regime: ``regime/G-*`` and ``regime/L-*`` (trajectory
        level), ``regime/<level>/G-*`` per upper level, ``rollback_frac/<level>`` (a channel
        in rollback) per level, trajectory included."""
        valid = self.valid_np
        glob, local, codes = self._global_np(), self._local_np(), self.codes
        if not bool(valid.all()):
            glob, local, codes = glob[:, valid], local[valid], codes[:, :, valid]
        n_lev = glob.shape[0]
        n_glob = len(_rg.GLOBAL_LABELS)
        occ = np.bincount((glob + n_glob * np.arange(n_lev)[:, None]).ravel(),
                          minlength=n_lev * n_glob).reshape(n_lev, n_glob).tolist()
        loc = np.bincount(local, minlength=len(_rg.LOCAL_LABELS)).tolist()
        rolled = (codes == 1).any(1).sum(1).tolist()
        n = max(glob.shape[1], 1)
        out = {f"regime/{lab}": c / n for lab, c in zip(_rg.GLOBAL_LABELS, occ[-1])}
        out.update({f"regime/{lab}": c / n for lab, c in zip(_rg.LOCAL_LABELS, loc)})
        for name, counts in zip(self.names[:-1], occ[:-1]):
            out.update({f"regime/{name}/{lab}": c / n for lab, c in zip(_rg.GLOBAL_LABELS,
                                                                         counts)})
        out.update({f"rollback_frac/{name}": c / n for name, c in zip(self.names, rolled)})
        return out

    def metrics(self) -> dict[str, float]:
        """:meth:`occupancy` plus ``fiber_clip_frac`` (= ``clip_frac``, fraction of tokens
        the fiber gate clips), ``base_gate_frac`` (rows not in G-I) and
        ``log_base_weight/abs_max`` (over rows with tokens): the metrics of ``fiberpo`` and
        ``fiberpo_domain``."""
        out = self.occupancy()
        out["fiber_clip_frac"] = float(self.n_clip.sum()) / max(float(self.lengths.sum()), 1.0)
        out["clip_frac"] = out["fiber_clip_frac"]
        out["base_gate_frac"] = 1.0 - out["regime/G-I"]
        valid = self.valid_np
        log_w = self.log_w if bool(valid.all()) else self.log_w[valid]
        out["log_base_weight/abs_max"] = float(np.abs(log_w).max())
        return out
