"""V6/V7 certificates pass on the library and fail on a broken one."""

from __future__ import annotations

import numpy as np
from fibration_theory.proofs import cert_rgf

from fibration_theory import losses


def _rng():
    return np.random.default_rng(0)


def test_v6_v7_pass():
    for check in (cert_rgf.ppo_is_rgf, cert_rgf.grpo_is_rgf, cert_rgf.gspo_is_rgf,
                  cert_rgf.apc_relaxes_to_ppo_and_grpo, cert_rgf.gspo_derivation_steps,
                  cert_rgf.claim_3_5_chain):
        rec = check.certificate.run(_rng())
        assert rec.status == "pass", rec


def _broken_compute(name, log_prob, old, adv, mask, **params):
    """The library's objective plus a spurious 1e-6 * sum |log r| term: an error far above
    rounding but far below anything a loss curve would show."""
    out = losses.compute(name, log_prob, old, adv, mask, **params)
    bump = 1e-6 * (log_prob - old).abs().sum()
    return type(out)(out.loss + bump, out.metrics, out.rgf)


def test_v6_fails_on_broken_objective():
    for check in (cert_rgf.ppo_is_rgf, cert_rgf.grpo_is_rgf, cert_rgf.gspo_is_rgf,
                  cert_rgf.apc_relaxes_to_ppo_and_grpo):
        rec = check.certificate.run(_rng(), compute=_broken_compute)
        assert rec.status == "fail", rec


def test_v7_fails_on_wrong_bound():
    rec = cert_rgf.claim_3_5_chain.certificate.run(_rng(), pinsker=lambda kl: np.sqrt(kl / 8))
    assert rec.status == "fail", rec


def test_gspo_steps_fail_on_wrong_weights(monkeypatch):
    # the derivation step compares against (log s + 1) A; corrupt log s and see it fail
    real = np.exp
    monkeypatch.setattr(cert_rgf.np, "exp", lambda a: real(a) * (1 + 1e-3))
    rec = cert_rgf.gspo_derivation_steps.certificate.run(_rng())
    assert rec.status == "fail", rec
