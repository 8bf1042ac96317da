"""The fast path (``fibration_theory.fiberpo.fast``) against its references.

References: the closed forms of ``gating`` (values and autograd gradients), the closed-form
loss route (``fiberpo.fast_path(False)``) for ``losses.compute`` (loss, gated ratio,
gradient, metrics),
and a plain copy of the pre-rewrite ``ratio_metrics`` (boolean-gathered tokens).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fibration_theory import Hierarchy, fiberpo, gating, losses
from fibration_theory.fiberpo import fast as fast_mod
from fibration_theory.metrics import ratio_metrics

#: relative tolerance of G(r): log G sums at most 2L + 2 rounded terms of size <= 1 (the
#: gates are bounded by their budgets, the clips by eps), so fused and generic differ by a
#: few units of 2^-52 in log G; 1e-13 leaves ~500x headroom, any wrong term is >= 1e-4
VALUE_RTOL = 1e-13
#: gradient tolerance, relative to the largest sum a gradient entry is made of
#: (sum |w G| times the largest token count, the slope -k of a rollback gate): the two paths
#: add the same products in different orders, a few ulps per term over <= 50 terms
GRAD_RTOL = 1e-13
#: metrics that are means of many rounded terms (ratio/*, tv/*, k3): summation order differs
METRIC_RTOL = 1e-12
#: absolute tolerance of signed means (k1) and of max |log w|, per unit of max |log r| + 1
METRIC_ATOL = 1e-13
#: float32 runs: the same, with 2^-23 in place of 2^-52 (a factor 2^29 ~ 5e8)
F32_RTOL = 5e-5

SETTINGS = settings(deadline=None, derandomize=True, max_examples=150)


@dataclasses.dataclass
class Case:
    mask: torch.Tensor  # [B, T] bool
    log_ratio: torch.Tensor  # [B, T] float64; padding holds junk (inf, nan, 1e3)
    weights: torch.Tensor  # [B, T] float64, the objective sum(w * G), padding included
    levels: list[torch.Tensor]  # coarse -> fine, [B] ids each
    c_plus: float | list[float]
    c_minus: float | list[float]
    eps: float

    def hierarchy(self) -> Hierarchy:
        return Hierarchy.from_padded(self.mask, levels=self.levels or None)

    def __repr__(self) -> str:  # echoed by assertion messages
        return (f"Case(mask={self.mask.int().tolist()}, log_ratio={self.log_ratio.tolist()}, "
                f"levels={[lv.tolist() for lv in self.levels]}, c_plus={self.c_plus}, "
                f"c_minus={self.c_minus}, eps={self.eps})")


@st.composite
def gate_cases(draw, max_rows: int = 6, max_len: int = 7, max_depth: int = 3) -> Case:
    """A float64 padded batch for the gates. Guarantees: at least one masked token; the mask
    may have holes and empty rows; ``0..max_depth`` nested levels above the rows (every node
    lies in one node of the level above); log-ratios uniform in ``[-s, s]`` with ``s`` one of
    1e-3, 0.05, 0.3, 5, 700, some exactly 0, some repeated within a row (ties); padding holds
    inf, nan or 1e3; budgets one for all levels or one per level, in ``[0, 0.3]``;
    ``eps`` in ``[0, 0.2]``; objective weights on every slot, padding included."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b, t = draw(st.integers(1, max_rows)), draw(st.integers(1, max_len))
    mask = rng.random((b, t)) < draw(st.sampled_from([0.5, 0.8, 1.0]))
    if draw(st.booleans()):
        mask[rng.integers(b)] = False  # an empty row
    if not mask.any():
        mask[rng.integers(b), rng.integers(t)] = True
    scale = draw(st.sampled_from([1e-3, 0.05, 0.3, 5.0, 700.0]))
    x = rng.uniform(-scale, scale, size=(b, t))
    x[rng.random((b, t)) < 0.15] = 0.0
    dup = rng.random((b, t)) < 0.2
    x[dup] = x[np.nonzero(dup)[0], 0]
    x[~mask] = rng.choice([np.inf, np.nan, 1e3], size=int((~mask).sum()))
    depth = draw(st.integers(0, max_depth))
    levels, ids = [], rng.integers(0, b, size=b)
    for _ in range(depth):
        levels.insert(0, torch.as_tensor(ids))
        ids = rng.integers(0, max(1, int(ids.max()) // 2 + 1), size=int(ids.max()) + 1)[ids]
    budget = st.one_of(st.just(0.0), st.floats(0.005, 0.3))
    per_level = draw(st.booleans())
    cp = [draw(budget) for _ in range(depth + 1)] if per_level else draw(budget)
    cm = [draw(budget) for _ in range(depth + 1)] if per_level else draw(budget)
    if draw(st.booleans()):
        # put the first row's trajectory-level channels in the narrow rollback band
        # C < |s| < (1 + 1/T) C of g_agg (eq 10), which uniform budgets rarely hit
        row = int(np.nonzero(mask.any(1))[0][0])
        vals = x[row][mask[row]]
        k = len(vals)
        for sign, c in ((1, cp), (-1, cm)):
            s = float(np.maximum(sign * vals, 0).sum()) / k
            if s > 0:
                c_new = s / rng.uniform(1.0, 1.0 + 1.0 / k)
                if isinstance(c, list):
                    c[-1] = c_new
                elif sign == 1:
                    cp = c_new
                else:
                    cm = c_new
    eps = draw(st.one_of(st.just(0.0), st.floats(0.001, 0.2)))
    return Case(torch.as_tensor(mask), torch.as_tensor(x), torch.as_tensor(rng.normal(size=(b, t))),
                levels, cp, cm, eps)


def _scalar(c):
    return c if isinstance(c, float) else c[-1]


def gate_and_grad(case: Case, levels: bool, use_fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G, d sum(w G) / d log_ratio)`` by the fast path or by the closed form of gating."""
    h = case.hierarchy()
    x = case.log_ratio.clone().requires_grad_(True)
    cp = case.c_plus if levels else _scalar(case.c_plus)
    cm = case.c_minus if levels else _scalar(case.c_minus)
    if use_fused:
        plan = fiberpo.gate_plan(h, c_plus=cp, c_minus=cm, eps=case.eps, levels=levels)
        g = fiberpo.gate(x, plan, fast=True)[0]
    else:
        fn = gating.fiberpo_domain_ratio if levels else gating.fiberpo_ratio
        g = fn(x, h, c_plus=cp, c_minus=cm, eps=case.eps)
    (g * case.weights).sum().backward()
    return g.detach(), x.grad


def assert_gate_matches(case: Case, levels: bool) -> None:
    g1, d1 = gate_and_grad(case, levels, use_fused=True)
    g0, d0 = gate_and_grad(case, levels, use_fused=False)
    assert torch.allclose(g1, g0, rtol=VALUE_RTOL, atol=0), f"G differs for {case!r}"
    scale = float((case.weights.abs() * g0).sum()) * (1 + case.mask.sum().item())
    assert torch.allclose(d1, d0, rtol=GRAD_RTOL, atol=GRAD_RTOL * scale), \
        f"gradient differs by {float((d1 - d0).abs().max()):.3e} for {case!r}"


@SETTINGS
@given(gate_cases())
def test_fused_gate_equals_closed_form(case):
    """Property: the fused FiberPO and FGH gates equal gating's closed forms (eqs 7, 31) in
    value and in the gradient of sum(w G), empty rows, holes, ties and |log r| <= 700
    included."""
    assert_gate_matches(case, levels=False)
    assert_gate_matches(case, levels=True)


def test_a_broken_backward_is_caught(monkeypatch):
    """Property: the comparison fails when the fused backward drops the coupling term
    (eq 20's trajectory-mediated part), so the property test above can fail."""
    # row 0 drifts into rollback (log s+ = 0.11, C+ = 0.1): the coupling term is nonzero
    # (in pass-through it cancels, Property 5.4)
    case = Case(torch.ones(2, 3, dtype=torch.bool),
                torch.tensor([[0.12, 0.1, 0.11], [0.0, 0.05, -0.04]], dtype=torch.float64),
                torch.ones(2, 3, dtype=torch.float64), [], 0.1, 0.1, 0.04)
    assert_gate_matches(case, levels=False)
    monkeypatch.setattr(fast_mod, "_row_grads", lambda plan, rows, eps, s, g, u: 0 * g)
    with pytest.raises(AssertionError):
        assert_gate_matches(case, levels=False)


# ---------------------------------------------------------------------------- loss route
def _compute(case: Case, name: str, generic: bool, dtype=torch.float64):
    h = case.hierarchy()
    old = torch.linspace(-3, -1, case.mask.numel(), dtype=dtype).reshape(case.mask.shape)
    lp = (old + torch.nan_to_num(case.log_ratio.to(dtype), nan=0.0, posinf=0.0)
          ).requires_grad_(True)
    adv = case.weights.to(dtype)
    kw = {"c_plus": case.c_plus, "c_minus": case.c_minus, "eps": case.eps}
    if name == "fiberpo":
        kw.update(c_plus=_scalar(case.c_plus), c_minus=_scalar(case.c_minus))
    if generic:
        with fiberpo.fast_path(False):
            out = losses.compute(name, lp, old, adv, case.mask, hierarchy=h, **kw)
    else:
        out = losses.compute(name, lp, old, adv, case.mask, hierarchy=h, **kw)
    out.loss.backward()
    return out, lp.grad


def assert_metrics_match(fast: dict, ref: dict, x_scale: float, rtol: float, case) -> None:
    assert list(fast) == list(ref), f"metric keys differ: {list(fast)} vs {list(ref)}"
    for key, want in ref.items():
        got = fast[key]
        if key.startswith(("regime/", "rollback_frac/", "fiber_clip", "clip_frac",
                           "base_gate", "empty_rows")):
            ok = got == want  # counts of identical decisions
        elif key in ("approx_kl/k1", "log_base_weight/abs_max", "loss"):
            ok = math.isclose(got, want, rel_tol=rtol, abs_tol=METRIC_ATOL * x_scale)
        else:
            ok = math.isclose(got, want, rel_tol=rtol, abs_tol=0.0) or got == want
        assert ok, f"{key}: fused {got!r} vs generic {want!r} for {case!r}"


@SETTINGS
@given(gate_cases())
def test_loss_route_equals_generic(case):
    """Property: losses.compute through the fast path gives the generic path's loss, gated
    ratio, log-prob gradient and metrics (same keys in the same order, identical regime
    counts), for FiberPO and FiberPO-Domain with per-level budgets."""
    x_scale = 1.0 + float(case.log_ratio[case.mask].abs().max())
    for name in ("fiberpo", "fiberpo_domain"):
        fast, d1 = _compute(case, name, generic=False)
        ref, d0 = _compute(case, name, generic=True)
        assert torch.allclose(fast.gated_ratio, ref.gated_ratio, rtol=VALUE_RTOL, atol=0), \
            f"{name}: G differs for {case!r}"
        scale = float((ref.weights * ref.gated_ratio.detach() * case.weights).abs().sum()) * (
            1 + case.mask.sum().item())
        assert torch.allclose(d1, d0, rtol=GRAD_RTOL, atol=GRAD_RTOL * scale), \
            f"{name}: gradient differs by {float((d1 - d0).abs().max()):.3e} for {case!r}"
        assert_metrics_match(fast.metrics, ref.metrics, x_scale, METRIC_RTOL, case)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_loss_route_equals_generic(seed):
    """Property: in float32 the fast path makes the same regime decisions (identical
    counts) and agrees to float32 rounding on a 64 x 200 batch with domains and groups."""
    rng = np.random.default_rng(seed)
    b, t = 64, 200
    lengths = rng.integers(0, t + 1, size=b)
    mask = torch.as_tensor(np.arange(t)[None] < lengths[:, None])
    groups = torch.as_tensor(np.arange(b) // 8)
    case = Case(mask, torch.as_tensor(rng.normal(scale=0.05, size=(b, t))),
                torch.as_tensor(rng.normal(size=(b, t))), [groups % 3, groups],
                [0.1, 0.08, 0.05], [0.04, 0.05, 0.06], 0.03)
    x_scale = 1.0 + float(case.log_ratio.abs().max())
    for name in ("fiberpo", "fiberpo_domain"):
        fast, d1 = _compute(case, name, generic=False, dtype=torch.float32)
        ref, d0 = _compute(case, name, generic=True, dtype=torch.float32)
        assert torch.allclose(fast.gated_ratio, ref.gated_ratio, rtol=F32_RTOL, atol=0)
        assert torch.allclose(d1, d0, rtol=F32_RTOL, atol=F32_RTOL * float(d0.abs().max()))
        assert_metrics_match(fast.metrics, ref.metrics, x_scale * 1e9, F32_RTOL, seed)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_host_packed_metrics_equal_generic(monkeypatch, dtype):
    """Property: the metrics route used off the CPU (the [B]-sized inputs packed into one
    float64 tensor and moved to the host once) gives the generic path's metrics too; the
    CPU tests otherwise only see the in-place numpy route. Empty rows and two levels."""
    monkeypatch.setattr(fast_mod, "_NUMPY_FLOATS", ())
    rng = np.random.default_rng(7)
    b, t = 24, 30
    lengths = rng.integers(0, t + 1, size=b)
    lengths[[3, 11]] = 0
    mask = torch.as_tensor(np.arange(t)[None] < lengths[:, None])
    groups = torch.as_tensor(np.arange(b) // 4)
    case = Case(mask, torch.as_tensor(rng.normal(scale=0.08, size=(b, t))),
                torch.as_tensor(rng.normal(size=(b, t))), [groups % 2, groups],
                [0.1, 0.08, 0.05], [0.04, 0.05, 0.06], 0.03)
    x_scale = 1.0 + float(case.log_ratio.abs().max())
    rtol = METRIC_RTOL if dtype == torch.float64 else F32_RTOL
    for name in ("fiberpo", "fiberpo_domain"):
        fast, _ = _compute(case, name, generic=False, dtype=dtype)
        ref, _ = _compute(case, name, generic=True, dtype=dtype)
        assert_metrics_match(fast.metrics, ref.metrics, x_scale * (1 if rtol == METRIC_RTOL
                                                                   else 1e9), rtol, case)


def test_data_parallel_and_functorch_take_the_generic_path(monkeypatch):
    """Property: a hierarchy with its own allreduce hook, or a functorch-wrapped input, is
    not sent through the fused Function (whose backward ignores the hook)."""
    mask = torch.ones(2, 3, dtype=torch.bool)
    x = torch.full((2, 3), 0.01, dtype=torch.float64)
    h_dp = Hierarchy.from_padded(mask, allreduce=lambda t: t + 0)
    assert not fast_mod.supported(x, h_dp)
    assert fast_mod.supported(x, Hierarchy.from_padded(mask))
    seen = []
    torch.func.vmap(lambda y: seen.append(fast_mod.supported(y, Hierarchy.from_padded(mask)))
                    or y)(x[None])
    assert seen == [False]

    def boom(*args, **kwargs):
        raise AssertionError("the fused Function ran")

    monkeypatch.setattr(fast_mod.FiberGate, "apply", boom)
    lp = x.clone().requires_grad_(True)
    out = losses.compute("fiberpo", lp, torch.zeros_like(x), torch.ones_like(x), mask,
                         hierarchy=h_dp)
    out.loss.backward()
    assert torch.isfinite(lp.grad).all()


# ---------------------------------------------------------------------------- ratio metrics
def reference_ratio_metrics(log_ratio: torch.Tensor, hierarchy: Hierarchy) -> dict[str, float]:
    """The plain form: gather the masked tokens, then reduce (the code before the rewrite)."""
    x = log_ratio.detach().to(torch.float64)[hierarchy.mask]
    n = x.numel()
    e = torch.expm1(x)
    out = {"ratio/mean": math.exp(float(torch.logsumexp(x, 0)) - math.log(n)),
           "ratio/min": math.exp(float(x.min())), "ratio/max": math.exp(float(x.max())),
           "log_ratio/abs_max": float(x.abs().max()), "approx_kl/k1": float((-x).mean()),
           "approx_kl/k3": float(((e - x) / n).sum()), "tv/token": float((0.5 * e.abs() / n).sum()),
           "empty_rows": float(hierarchy.empty_rows)}
    row_mean = hierarchy.row_mean(torch.nan_to_num(log_ratio.detach().to(torch.float64)))
    out["tv/trajectory"] = float((0.5 * torch.expm1(row_mean[hierarchy.valid]).abs()).mean())
    for k, lv in enumerate(hierarchy.levels):
        node = hierarchy.node_mean(k, row_mean)
        out[f"tv/{lv.name}"] = float((0.5 * torch.expm1(node[lv.num_traj > 0]).abs()).mean())
    return out


@SETTINGS
@given(gate_cases(), st.sampled_from([torch.float64, torch.float32]))
def test_ratio_metrics_equal_reference(case, dtype):
    """Property: the gather-free ratio_metrics equals the plain gathered form, with junk
    (inf, nan) in the padding (masked=False) and with zeroed padding (masked=True)."""
    h = case.hierarchy()
    x = case.log_ratio.to(dtype)
    ref = reference_ratio_metrics(torch.where(case.mask, x, 0.0), h)
    x_scale = 1.0 + float(case.log_ratio[case.mask].abs().max())
    for got in (ratio_metrics(x, h), ratio_metrics(torch.where(case.mask, x, 0.0), h,
                                                    masked=True)):
        assert_metrics_match(got, ref, x_scale, METRIC_RTOL, case)


def test_peak_memory_tracker_counts_live_storage():
    """Property: the benchmark's CPU peak-memory tracker counts each new storage once, not
    views or in-place results, and releases storage when it dies (so it can tell a
    1.5x-memory objective from a 1x one)."""
    from fibration_theory.benchmarks.harness import peak_bytes

    mib = 2**20

    def two_then_one():
        a = torch.empty(mib // 4)  # 1 MiB of float32
        b = torch.empty(mib // 4)
        a.add_(1.0)  # in place: no new storage
        _ = b.view(-1, 4)[:, 0]  # a view: no new storage
        del a, b
        torch.empty(mib // 4)

    assert peak_bytes(two_then_one) == 2 * mib
    assert peak_bytes(lambda: torch.ones(mib // 8, dtype=torch.float64).exp()) == 2 * mib


@pytest.mark.slow
def test_compiled_kernels_equal_closed_form():
    """Property: the torch.compile'd kernels give the closed forms' values and gradients,
    and the generic loss route's metrics (two shapes, so the dynamic-shape kernels are
    reused)."""
    with fiberpo.fast_path(True, compiled=True):
        for seed, (b, t) in enumerate([(5, 7), (9, 4)]):
            rng = np.random.default_rng(seed)
            mask = torch.as_tensor(rng.random((b, t)) < 0.8)
            mask[0, 0] = True
            case = Case(mask, torch.as_tensor(rng.normal(scale=0.05, size=(b, t))),
                        torch.as_tensor(rng.normal(size=(b, t))),
                        [torch.as_tensor(np.arange(b) // 3)], [0.05, 0.04], 0.03, 0.02)
            assert_gate_matches(case, levels=False)
            assert_gate_matches(case, levels=True)
            for name in ("fiberpo", "fiberpo_domain"):
                fast, _ = _compute(case, name, generic=False)
                ref, _ = _compute(case, name, generic=True)
                assert_metrics_match(fast.metrics, ref.metrics, 1.0, METRIC_RTOL, case)

