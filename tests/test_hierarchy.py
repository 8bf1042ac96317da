"""The batch hierarchy: counts, nesting, ragged input, extra levels, tower property."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import batches

from fibration_theory import Hierarchy, gating, pad_ragged

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)
#: means of float64 sums in two orders
TOWER_TOL = 1e-14


def test_counts_by_hand():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    h = Hierarchy.from_padded(mask, group_ids=["a", "a", "b", "b"], domain_ids=[3, 3, 3, 3])
    assert h.lengths.tolist() == [3, 1, 4, 0]  # T_tau
    assert h.num_traj == 3 and h.num_tokens == 8 and h.empty_rows == 1
    g, d = h.level("group"), h.level("domain")
    assert g.num_traj.tolist() == [2, 1] and g.num_tokens.tolist() == [4, 4]  # |Tj(g)|, T_g
    assert d.num_traj.tolist() == [3] and d.num_tokens.tolist() == [8]  # |Tj(D)|, T_D


def test_nesting_error_names_rows():
    mask = torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"group_ids are not nested in domain_ids: row 2 and row 0"):
        Hierarchy.from_padded(mask, group_ids=[5, 6, 5], domain_ids=[0, 0, 1])


def test_extra_levels_nest_and_aggregate():
    mask = torch.ones(4, 2, dtype=torch.bool)
    h = Hierarchy.from_padded(mask, levels={"domain": [0, 0, 0, 0], "sub": [0, 0, 1, 1],
                                            "group": [0, 1, 2, 3]})
    assert [lv.name for lv in h.levels] == ["domain", "sub", "group"] and h.depth == 3
    with pytest.raises(ValueError, match="sub_ids are not nested in domain_ids"):
        Hierarchy.from_padded(mask, levels={"domain": [0, 1, 0, 0], "sub": [0, 0, 1, 1]})


def test_ragged_equals_padded():
    rows = [torch.tensor([0.1, -0.2]), torch.tensor([0.3]), torch.tensor([0.0, 0.2, -0.1])]
    values, mask = pad_ragged(rows)
    h1 = Hierarchy.from_ragged([2, 1, 3], group_ids=[0, 0, 1])
    h2 = Hierarchy.from_padded(mask, group_ids=[0, 0, 1])
    assert torch.equal(h1.mask, h2.mask) and torch.equal(h1.lengths, h2.lengths)
    assert values[2].tolist() == pytest.approx([0.0, 0.2, -0.1])


@SETTINGS
@given(batch=batches(allow_empty_rows=True))
def test_tower_property(batch):
    """Property: the domain aggregate equals the group-size-weighted mean of its groups'
    aggregates (eq 33) and the plain mean of its trajectories'."""
    h = batch.hierarchy()
    plus, _ = gating.trajectory_aggregates(batch.log_ratio, h)
    dom, grp = h.level("domain"), h.level("group")
    d_mean = h.node_mean(0, plus)
    g_mean = h.node_mean(1, plus)
    g_dom = torch.zeros(grp.n, dtype=torch.long).scatter_(0, grp.ids, dom.ids)
    weighted = torch.zeros(dom.n, dtype=torch.float64).index_add(
        0, g_dom, grp.num_traj * g_mean) / dom.num_traj.clamp_min(1)
    assert torch.allclose(weighted, d_mean, atol=TOWER_TOL), batch


@SETTINGS
@given(batch=batches(), b=st.tuples(st.floats(0.01, 0.3), st.floats(0.01, 0.3)))
def test_zero_mean_residuals(batch, b):
    """Property: each level's residual drifts (trajectory minus group, group minus domain)
    average to zero over the level's members, which is why each level gates only its own
    drift (eq 31)."""
    h = batch.hierarchy()
    aggs = gating.level_aggregates(batch.log_ratio, h)
    (dp, _), (gp, _), (tp, _) = aggs
    resid_traj = torch.where(h.valid, tp - gp, torch.zeros_like(tp))
    resid_grp = torch.where(h.valid, gp - dp, torch.zeros_like(tp))
    assert torch.allclose(h.node_mean(1, resid_traj), torch.zeros(h.levels[1].n,
                          dtype=torch.float64), atol=TOWER_TOL), batch
    assert torch.allclose(h.node_mean(0, resid_grp), torch.zeros(h.levels[0].n,
                          dtype=torch.float64), atol=TOWER_TOL), batch


@pytest.mark.parametrize("bad,match", [
    (dict(mask=torch.ones(2, 3, 1)), "mask must have shape"),
    (dict(mask=torch.tensor([[0, 2]])), "mask must hold only 0/1"),
    (dict(mask=torch.zeros(2, 3)), "mask: the batch has no response token"),
    (dict(mask=torch.ones(2, 3), group_ids=torch.tensor([0])), r"group_ids must have shape \[2\]"),
    (dict(mask=torch.ones(2, 3), group_ids=torch.tensor([0, -1])), "group_ids must be >= 0"),
    (dict(mask=torch.ones(2, 3), domain_ids=torch.tensor([0.0, 1.0])), "domain_ids must hold integer"),
    (dict(mask=torch.ones(2, 3), domain_ids=[0, None]), r"domain_ids\[1\] is missing"),
])
def test_bad_hierarchy_input(bad, match):
    with pytest.raises(ValueError, match=match):
        Hierarchy.from_padded(**bad)


def test_ragged_bad_lengths():
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        Hierarchy.from_ragged([2, -1])
