"""Bad input to the public entry points raises a ValueError whose message starts with the
argument's name: masks, hyperparameters (never coerced from strings or bools), Dr.GRPO's
length, and per-row ids, which behave alike as lists, numpy arrays and tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fibration_theory import Hierarchy, losses
from fibration_theory.losses.registry import REGISTRY

F64 = torch.float64


def _inputs(b: int = 2, t: int = 3):
    z = torch.zeros(b, t, dtype=F64)
    return {"log_prob": z.clone(), "old_log_prob": z.clone(), "advantages": z + 1.0,
            "mask": torch.ones(b, t, dtype=torch.bool)}


@pytest.mark.parametrize("mask,match", [
    (None, "mask is required"),
    ([["a", "b", "c"], ["d", "e", "f"]],
     "mask must be a bool or 0/1 tensor, got an array of dtype <U1"),
    ([[1, 1, 1], [1, 1]], "mask must be a bool or 0/1 tensor, got an array of dtype object"),
    (np.array([[1.0, np.nan, 1.0], [1.0, 1.0, 1.0]]), r"mask must hold only 0/1"),
])
def test_bad_mask_is_named(mask, match):
    kw = _inputs()
    kw["mask"] = mask
    with pytest.raises(ValueError, match=match):
        losses.compute("ppo_clip", **kw)


def _numeric_params():
    """(objective, parameter) for every hyperparameter whose default is a number or None
    (``state_ids`` is batch data, not a hyperparameter, and has its own tests)."""
    return [(name, p) for name, e in sorted(REGISTRY.items()) for p, d in e.params.items()
            if not isinstance(d, str)]


NUMERIC = _numeric_params()


@pytest.mark.parametrize("value", ["0.1", "1", True, False], ids=["str", "str-int", "True",
                                                                  "False"])
@pytest.mark.parametrize("name,param", NUMERIC, ids=[f"{n}.{p}" for n, p in NUMERIC])
def test_strings_and_bools_are_refused_never_coerced(name, param, value):
    """``eps="0.1"`` is an error naming ``eps``, never the number 0.1; a bool is no number."""
    kind = "string" if isinstance(value, str) else "bool"
    with pytest.raises(ValueError, match=rf"^{param} must be a real number.* the {kind}"):
        losses.compute(name, **_inputs(), **{param: value})


@pytest.mark.parametrize("name,param", NUMERIC, ids=[f"{n}.{p}" for n, p in NUMERIC])
def test_nan_hyperparameters_are_refused(name, param):
    kw = _inputs()
    params = {param: float("nan")}
    if param == "delta" and "c_plus" in REGISTRY[name].params:  # delta checked against C+ + C-
        params.update(c_plus=0.1, c_minus=0.05)
    if param == "norm_length":
        params["agg"] = "seq-mean-token-sum-norm"
    with pytest.raises(ValueError, match=rf"^{param} must be a real number, got NaN"):
        losses.compute(name, **kw, **params)


@pytest.mark.parametrize("name,param", [(n, p) for n, p in NUMERIC
                                        if p in ("eps_low", "eps_high", "tau_pos", "tau_neg",
                                                 "delta", "eps", "c_plus", "c_minus")])
def test_numpy_and_tensor_scalars_are_numbers(name, param):
    """A numpy float or a 0-d tensor is a real number: accepted like a float."""
    base = {"delta": 0.15} if param == "delta" else {}
    value = 0.1 if param != "delta" else 0.15
    if param == "delta" and "c_plus" in REGISTRY[name].params:  # delta checked against C+ + C-
        base = {"c_plus": 0.1, "c_minus": 0.05}
    outs = [losses.compute(name, **_inputs(), **{**base, param: v}).loss.item()
            for v in (value, np.float64(value), torch.tensor(value, dtype=F64))]
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.parametrize("value,match", [
    (float("inf"), "norm_length must be finite"), (0, "norm_length must be > 0"),
    (-4.0, "norm_length must be > 0"), (float("nan"), "norm_length must be a real number"),
    ("6", "norm_length must be a real number"), (True, "norm_length must be a real number"),
])
def test_dr_grpo_norm_length_is_a_finite_positive_real(value, match):
    """An infinite L would zero the loss and its gradient silently; 0, negatives, NaN, strings
    and bools are refused too."""
    with pytest.raises(ValueError, match=f"^{match}"):
        losses.compute("dr_grpo", **_inputs(), norm_length=value)


@pytest.mark.parametrize("value,match", [
    ("3", "dual_clip must be a real number"), (1.0, "dual_clip must be > 1"),
    (float("inf"), "dual_clip must be finite"),
])
def test_dual_clip_is_a_real_above_one(value, match):
    with pytest.raises(ValueError, match=f"^{match}"):
        losses.compute("ppo_clip", **_inputs(), dual_clip=value)


MASK4 = torch.ones(4, 2, dtype=torch.bool)


@pytest.mark.parametrize("ids,match", [
    ([[0], [0], [1], [1]],
     r"group_ids must be 1-D \(one label per row\); group_ids\[0\] is a list"),
    (np.array([[0, 0], [1, 1]]), r"group_ids must have shape \[4\] .*got \(2, 2\)"),
    (torch.tensor([[0, 0], [1, 1]]), r"group_ids must have shape \[4\], got \(2, 2\)"),
    ([0.0, 0.0, 1.0, 1.0], r"group_ids\[0\] is the number 0.0"),
    (np.array([0.0, 0.0, 1.0, 1.0]), "group_ids must hold integer ids or labels"),
    (torch.tensor([0.0, 0.0, 1.0, 1.0]), "group_ids must hold integer ids, got dtype"),
    ([True, True, False, False], r"group_ids\[0\] is the bool True"),
    ([0, 0, None, 1], r"group_ids\[2\] is missing"),
    ([0, 0, {}, 1], r"group_ids must be 1-D .*group_ids\[2\] is a dict"),
    (7, r"group_ids must be a \[4\] sequence"),
    ("abcd", r"group_ids must be a \[4\] sequence"),
])
def test_bad_ids_are_named(ids, match):
    with pytest.raises(ValueError, match=f"^{match}"):
        Hierarchy.from_padded(MASK4, group_ids=ids)


@pytest.mark.parametrize("make", [list, np.array, torch.tensor], ids=["list", "numpy", "tensor"])
def test_negative_ids_are_refused_in_every_container(make):
    with pytest.raises(ValueError, match=r"^group_ids must be >= 0 .*group_ids\[1\] = -1"):
        Hierarchy.from_padded(MASK4, group_ids=make([0, -1, 1, 1]))


def test_ids_as_list_numpy_or_tensor_give_the_same_hierarchy():
    """Integer ids give identical codes in a list, a numpy array (any integer dtype) and a
    tensor; string labels are factorized in order of first appearance."""
    raw = [7, 3, 7, 3]
    forms = [raw, tuple(raw), np.array(raw), np.array(raw, dtype=np.int32), torch.tensor(raw),
             [np.int64(v) for v in raw], [torch.tensor(v) for v in raw]]
    codes = [Hierarchy.from_padded(MASK4, group_ids=f).levels[0].ids for f in forms]
    assert all(torch.equal(c, codes[0]) for c in codes), codes
    assert codes[0].tolist() == [1, 0, 1, 0]
    strings = Hierarchy.from_padded(MASK4, group_ids=np.array(["b", "a", "b", "a"]))
    assert strings.levels[0].ids.tolist() == [0, 1, 0, 1]
