"""Bad input to losses.compute and the shared checks raises ValueError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fibration_theory import Hierarchy, gating, losses
from fibration_theory.validation import check_nonneg, check_positive, check_real


def _ok():
    mask = torch.ones(2, 3, dtype=torch.bool)
    z = torch.zeros(2, 3, dtype=torch.float64)
    return dict(log_prob=z.clone(), old_log_prob=z.clone(), advantages=z + 1.0, mask=mask)


def _with(**changes):
    kw = _ok()
    kw.update(changes)
    return kw


NAN = float("nan")
CASES = [
    ("log_prob", _with(log_prob=torch.zeros(2, 4, dtype=torch.float64)), "log_prob has shape"),
    ("advantages", _with(advantages=torch.zeros(3, 3, dtype=torch.float64)), "advantages has shape"),
    ("old_log_prob", _with(old_log_prob=torch.tensor([[0.0, NAN, 0], [0, 0, 0]],
                                                     dtype=torch.float64)), "old_log_prob holds a non-finite"),
    ("log_prob inf", _with(log_prob=torch.tensor([[0.0, 0, 0], [0, float("inf"), 0]],
                                                 dtype=torch.float64)), "log_prob holds a non-finite"),
    ("dtype", _with(log_prob=torch.zeros(2, 3, dtype=torch.float32)), "dtype mismatch"),
    ("int dtype", _with(advantages=torch.zeros(2, 3, dtype=torch.long)), "advantages must have a floating"),
    ("mask", _with(mask=torch.zeros(2, 3)), "mask: the batch has no response token"),
    ("mask values", _with(mask=torch.full((2, 3), 3)), "mask must hold only 0/1"),
]


@pytest.mark.parametrize("label,kw,match", CASES, ids=[c[0] for c in CASES])
def test_bad_tensor_input(label, kw, match):
    with pytest.raises(ValueError, match=match):
        losses.compute("fiberpo", **kw)


def test_nan_outside_mask_is_ignored():
    kw = _ok()
    kw["mask"] = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    kw["log_prob"][0, 2] = float("-inf")
    kw["old_log_prob"][1, 2] = NAN
    lp = kw["log_prob"].requires_grad_(True)
    out = losses.compute("fiberpo", **kw)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(lp.grad).all()


@pytest.mark.parametrize("params,match", [
    (dict(c_plus=-0.1), "c_plus must be >= 0"),
    (dict(c_minus=float("inf")), "c_minus must be finite"),
    (dict(eps=-1.0), "eps must be >= 0"),
    (dict(c_plus=0.1, c_minus=0.05, delta=0.2), r"delta: c_plus \+ c_minus = .* differs from delta"),
    (dict(bogus=1), "bogus: not a parameter of 'fiberpo'"),
    (dict(agg="mean"), "agg must be one of"),
])
def test_bad_params(params, match):
    with pytest.raises(ValueError, match=match):
        losses.compute("fiberpo", **_ok(), **params)


def test_delta_consistent_is_accepted():
    out = losses.compute("fiberpo", **_ok(), c_plus=0.1, c_minus=0.05, delta=0.15)
    assert torch.isfinite(out.loss)


def test_per_level_budget_length_checked():
    kw = _ok()
    h = Hierarchy.from_padded(kw["mask"], [0, 1], [0, 0])
    with pytest.raises(ValueError, match="c_plus has 2 entries; this hierarchy needs .* \\(3\\)"):
        losses.compute("fiberpo_domain", **kw, hierarchy=h, c_plus=[0.1, 0.1], c_minus=0.05)
    with pytest.raises(ValueError, match="delta: .* at level 1"):
        losses.compute("fiberpo_domain", **kw, hierarchy=h, c_plus=[0.1, 0.2, 0.1],
                       c_minus=0.05, delta=0.15)


def test_unknown_objective_lists_names():
    with pytest.raises(ValueError, match="unknown objective 'fiberpoo'; available: apc"):
        losses.compute("fiberpoo", **_ok())


def test_hierarchy_mask_mismatch():
    kw = _ok()
    h = Hierarchy.from_padded(torch.tensor([[1, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="hierarchy: its mask differs"):
        losses.compute("fiberpo", **kw, hierarchy=h)


def test_gate_functions_validate():
    h = Hierarchy.from_padded(torch.ones(1, 2))
    with pytest.raises(ValueError, match="log_ratio has shape"):
        gating.fiberpo_ratio(torch.zeros(1, 3, dtype=torch.float64), h, c_plus=.1, c_minus=.1,
                             eps=.1)


def test_duplicate_registration_refused(monkeypatch):
    from fibration_theory.losses import registry

    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("fiberpo", "again")(lambda batch: None)


# ---------------------------------------------------------------- scalar and budget checks
@pytest.mark.parametrize("value,match", [
    ("0.1", r"^c_plus must be a real number, got the string '0.1' \(strings are refused"),
    (True, r"^c_plus must be a real number, got the bool True"),
    (np.bool_(False), r"^c_plus must be a real number, got the bool False"),
    (NAN, r"^c_plus must be a real number, got NaN"),
    (None, r"^c_plus must be a real number, got NoneType"),
    (1 + 2j, r"^c_plus must be a real number, got complex"),
    (float("inf"), r"^c_plus must be finite"),
    (-0.1, r"^c_plus must be >= 0"),
    ([0.1, "0.2"], r"^c_plus must be a real number, got the string '0.2' at c_plus\[1\]"),
    ([0.1, NAN], r"^c_plus must be a real number, got NaN at c_plus\[1\]"),
    ([0.1, -1.0], r"^c_plus must be >= 0"),
    ([[0.1], [0.2]], r"^c_plus must be a number or a 1-D sequence of numbers, got a nested list"),
    (np.zeros((2, 2)), r"^c_plus must be a number or a 1-D sequence of numbers, got shape"),
    (torch.tensor([0.1, float("inf")]), r"^c_plus must be finite"),
])
def test_check_nonneg_refuses_and_names(value, match):
    with pytest.raises(ValueError, match=match):
        check_nonneg(value, "c_plus")


@pytest.mark.parametrize("value", [0, 0.1, np.float32(0.1), np.int64(2), torch.tensor(0.1),
                                   [0.1, 0.2], (0.0, 1), np.array([0.1, 0.2]),
                                   torch.tensor([0.1, 0.2])])
def test_check_nonneg_accepts_reals_and_1d_sequences(value):
    assert check_nonneg(value, "c_plus") is None


def test_check_real_and_check_positive():
    assert check_real(np.float32(0.5), "eps") == 0.5 and check_real(torch.tensor(2), "eps") == 2
    assert check_real(float("inf"), "eps", finite=False) == float("inf")
    for bad, match in [("1", "the string"), (False, "the bool"), (NAN, "NaN"),
                       (float("-inf"), "finite"), ([1.0], "got list")]:
        with pytest.raises(ValueError, match=f"^eps must be .*{match}"):
            check_real(bad, "eps")
    assert check_positive(3, "tau_pos") == 3.0
    for bad in (0, -1e-9):
        with pytest.raises(ValueError, match="^tau_pos must be > 0"):
            check_positive(bad, "tau_pos")
