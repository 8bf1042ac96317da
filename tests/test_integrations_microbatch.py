"""Micro-batched objectives equal the whole batch's, gradient for gradient (float64)."""

import pytest
import torch
from docs_examples import run_example

from fibration_theory import Hierarchy, losses
from fibration_theory.integrations import microbatch

B, T, D = 9, 5, 4
SPLITS = (3, 2, 4)  # three micro-batches of unequal size


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(D, dtype=torch.float64, generator=g, requires_grad=True)
    feats = torch.randn(B, T, D, dtype=torch.float64, generator=g)
    old = torch.randn(B, T, dtype=torch.float64, generator=g) * 0.3 - 1.0
    adv = torch.randn(B, 1, dtype=torch.float64, generator=g).expand(B, T).clone()
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 3:] = False
    mask[6, 2:] = False
    # groups of three rows and two domains, shuffled so that each spans micro-batches
    perm = torch.randperm(B, generator=g)
    groups = (torch.arange(B) // 3)[perm]
    domains = (groups >= 1).long()
    return theta, feats, old, adv, mask, groups, domains


def _log_prob(theta, feats):
    """A differentiable stand-in for a policy's per-token log-probs, ``[B, T]``."""
    return -torch.nn.functional.softplus(feats @ theta)


def _whole(name, theta, feats, old, adv, mask, groups, domains, **params):
    h = Hierarchy.from_padded(mask, group_ids=groups, domain_ids=domains)
    out = losses.compute(name, _log_prob(theta, feats), old, adv, mask, hierarchy=h, **params)
    (grad,) = torch.autograd.grad(out.loss, theta)
    return float(out.loss.detach()), grad


def _parts(x):
    return list(torch.split(x, SPLITS))


def _micro(name, theta, feats, old, adv, mask, groups, domains, fresh=False, **params):
    fs, olds, advs, ms = _parts(feats), _parts(old), _parts(adv), _parts(mask)
    with torch.no_grad():  # the gather pass over the step's micro-batches
        current = [_log_prob(theta, f) for f in fs]
    p = microbatch.plan(name, olds, advs, ms, log_probs=None if fresh else current,
                        group_ids=_parts(groups), domain_ids=_parts(domains), **params)
    total, grad = 0.0, torch.zeros_like(theta)
    for j, f in enumerate(fs):  # accumulation: one forward/backward per micro-batch
        loss = p.loss(j, _log_prob(theta, f))
        (gj,) = torch.autograd.grad(loss, theta)
        total, grad = total + float(loss.detach()), grad + gj
    return total, grad


def _local(name, theta, feats, old, adv, mask, groups, domains, **params):
    """The approximate result: each micro-batch gated on its own rows (seq-mean over J)."""
    grad = torch.zeros_like(theta)
    for f, o, a, m, gr, d in zip(_parts(feats), _parts(old), _parts(adv), _parts(mask),
                                 _parts(groups), _parts(domains), strict=True):
        h = Hierarchy.from_padded(m, group_ids=gr, domain_ids=d)
        out = losses.compute(name, _log_prob(theta, f), o, a, m, hierarchy=h, **params)
        grad = grad + torch.autograd.grad(out.loss / len(SPLITS), theta)[0]
    return grad


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", ["fiberpo", "fiberpo_domain"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_summed_microbatch_gradients_equal_the_whole_batch(name, agg):
    batch = _batch(0)
    # off-policy: the old policy differs from the current one, so the gates are active
    loss_w, grad_w = _whole(name, *batch, agg=agg)
    loss_m, grad_m = _micro(name, *batch, agg=agg)
    assert abs(loss_m - loss_w) <= 1e-12 * abs(loss_w)
    assert _rel(grad_m, grad_w) <= 1e-12
    # the micro-batch-local approximation is measurably different on the same batch
    assert _rel(_local(name, *batch, agg=agg), grad_w) > 1e-3


@pytest.mark.parametrize("name", ["fiberpo", "fiberpo_domain"])
def test_fresh_samples_need_no_model_pass(name):
    theta, feats, _, adv, mask, groups, domains = _batch(1)
    with torch.no_grad():
        old = _log_prob(theta, feats)  # fresh samples: ratio exactly 1
    loss_w, grad_w = _whole(name, theta, feats, old, adv, mask, groups, domains)
    loss_m, grad_m = _micro(name, theta, feats, old, adv, mask, groups, domains, fresh=True)
    assert abs(loss_m - loss_w) <= 1e-12 * max(abs(loss_w), 1e-300)
    assert _rel(grad_m, grad_w) <= 1e-12
    # with a stale plan (log_probs omitted although the policy moved) the result is wrong
    theta2 = (theta + 0.5).detach().requires_grad_(True)
    _, grad_w2 = _whole(name, theta2, feats, old, adv, mask, groups, domains)
    _, grad_m2 = _micro(name, theta2, feats, old, adv, mask, groups, domains, fresh=True)
    assert _rel(grad_m2, grad_w2) > 1e-3


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_weights_are_the_whole_steps(agg):
    """Property: ``StepPlan.weights(j)`` is micro-batch ``j``'s block of the whole batch's RGF
    weights (the weights a per-token penalty such as a KL estimate must take); with
    ``token-mean`` they are ``1/T`` of the whole batch, not of the micro-batch."""
    theta, feats, old, adv, mask, groups, domains = _batch(3)
    h = Hierarchy.from_padded(mask, group_ids=groups, domain_ids=domains)
    whole = losses.compute("fiberpo_domain", _log_prob(theta, feats).detach(), old, adv, mask,
                           hierarchy=h, agg=agg)
    p = microbatch.plan("fiberpo_domain", _parts(old), _parts(adv), _parts(mask),
                        log_probs=_parts(_log_prob(theta, feats).detach()),
                        group_ids=_parts(groups), domain_ids=_parts(domains), agg=agg)
    got = torch.cat([p.weights(j) for j in range(len(SPLITS))])
    assert torch.equal(got, whole.weights)
    if agg == "token-mean":
        assert torch.allclose(got[mask], torch.full_like(got[mask], 1 / float(mask.sum())),
                              rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="j:"):
        p.weights(len(SPLITS))


def test_bad_input_names_the_argument():
    _, _, old, adv, mask, groups, _ = _batch(2)
    with pytest.raises(ValueError, match="advantages"):
        microbatch.plan("fiberpo", _parts(old), _parts(adv)[:2], _parts(mask))
    p = microbatch.plan("fiberpo", _parts(old), _parts(adv), _parts(mask),
                        group_ids=_parts(groups))
    with pytest.raises(ValueError, match="log_prob"):
        p.loss(0, torch.zeros(2, T, dtype=torch.float64))
    with pytest.raises(ValueError, match="j:"):
        p.loss(3, torch.zeros(3, T, dtype=torch.float64))


def test_docs_example_runs(tmp_path):
    """Property: the micro-batch example of docs/integrations.md runs as written and passes its
    own check against the whole batch."""
    proc = run_example("integrations.md", "microbatch", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "micro-batched gradient == whole batch" in proc.stdout
