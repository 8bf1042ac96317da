"""A tabular autoregressive policy over token sequences, with verifiable multi-domain prompts.

The task stands in for RL on a language model, small enough that one training run takes
seconds on one CPU thread and that every quantity of interest is exact:

* A *prompt* ``p`` has a target sequence ``y_p`` of length ``L_p`` over a vocabulary of ``V``
  tokens and a tolerance ``k_p``: a completion succeeds (reward 1, else 0) when it has at most
  ``k_p`` wrong tokens. Prompts come from domains that differ in length, initial accuracy
  and tolerance, i.e. in difficulty; each domain is split into sub-domains (used by the depth
  experiment).
* Targets are hierarchical: each domain has a canonical sequence, each sub-domain changes
  a fraction ``subdomain_variation`` of its positions, each prompt a further fraction
  ``prompt_variation``. Prompts of one domain therefore mostly agree, as tasks of one
  domain share skills.
* The policy's logits at the state ``(prompt, position t, errors so far e)``, with ``e``
  capped at ``k_p + 1`` (a dead completion), are the sum of a per-prompt table and a table
  *shared by the domain* (indexed by ``(domain, t, e)``). That triple is a Markov state for
  the reward, so the policy is exactly tabular, and all completions of one prompt share their
  first state, as LLM completions share their prompt. The shared table is
  what makes an update on some prompts move the others (generalisation and interference,
  as parameter sharing does in a language model), so an over-large step can hurt.
* The initial per-prompt table puts probability ``p0_p`` on the correct token at every state
  (a "pretrained" prior whose accuracy sets the difficulty), plus a little seeded noise; the
  shared table starts at zero.

Exact evaluation: the success probability of each prompt and the state-visitation
probabilities follow from a forward recursion over ``e`` (``success_prob``, ``visitation``),
so success-rate curves carry no evaluation noise.

Shapes: ``B`` rows (completions), ``T = max L_p`` padded positions, ``E = max k_p + 2`` error
buckets, ``P`` prompts, ``V`` tokens.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from fibration_theory.simulations.streams import torch_generator

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class DomainSpec:
    """One domain of prompts."""

    name: str
    #: tokens per completion ``L``
    length: int
    #: prompts in the domain
    n_prompts: int
    #: initial probability of the correct token at every state (higher is easier)
    p_correct: float
    #: a completion succeeds with at most this many wrong tokens
    tolerance: int
    #: the domain's prompts are split round-robin into this many sub-domains
    n_subdomains: int = 2


#: Three domains of different length and difficulty. Before the per-prompt jitter the
#: initial success rates are 0.42^4 = 0.031 (short, no error allowed), P(Bin(8, 0.4) <= 1)
#: = 0.106 (medium) and P(Bin(16, 0.28) <= 2) = 0.132 (long).
DEFAULT_DOMAINS: tuple[DomainSpec, ...] = (
    DomainSpec("short", length=4, n_prompts=6, p_correct=0.42, tolerance=0),
    DomainSpec("medium", length=8, n_prompts=6, p_correct=0.6, tolerance=1),
    DomainSpec("long", length=16, n_prompts=6, p_correct=0.72, tolerance=2),
)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The prompt set and the initial policy."""

    #: vocabulary size ``V``
    vocab: int = 4
    #: domains, in a fixed order (domain id = position)
    domains: tuple[DomainSpec, ...] = DEFAULT_DOMAINS
    #: std of the per-prompt jitter of the correct token's initial logit
    prompt_jitter: float = 0.25
    #: std of the per-entry noise of the initial logits table
    init_noise: float = 0.05
    #: fraction of positions where a sub-domain's target differs from its domain's
    subdomain_variation: float = 0.15
    #: fraction of positions where a prompt's target differs from its sub-domain's
    prompt_variation: float = 0.15
    #: add the per-domain shared logits table (False: independent per-prompt tables)
    shared: bool = True


class SequenceTask:
    """The prompts of one seed: targets, lengths, tolerances, ids and the initial logits."""

    def __init__(self, cfg: TaskConfig, seed: int):
        if cfg.vocab < 2:
            raise ValueError(f"vocab must be >= 2, got {cfg.vocab}")
        for name in ("subdomain_variation", "prompt_variation"):
            if not 0 <= getattr(cfg, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(cfg, name)}")
        gen = torch_generator("sequence/task", seed)
        self.cfg = cfg
        self.vocab = cfg.vocab
        lengths, tols, doms, subs, p0 = [], [], [], [], []
        sub_offset = 0
        for d, spec in enumerate(cfg.domains):
            if spec.length < 1 or spec.n_prompts < 1 or spec.tolerance < 0:
                raise ValueError(f"domains[{d}] must have length, n_prompts >= 1, tolerance >= 0")
            if not 0 < spec.p_correct < 1:
                raise ValueError(f"domains[{d}].p_correct must be in (0, 1)")
            for j in range(spec.n_prompts):
                lengths.append(spec.length)
                tols.append(spec.tolerance)
                doms.append(d)
                subs.append(sub_offset + j % spec.n_subdomains)
                p0.append(spec.p_correct)
            sub_offset += spec.n_subdomains
        self.n_prompts = len(lengths)
        self.lengths = torch.tensor(lengths)  # [P]
        self.tolerance = torch.tensor(tols)  # [P]
        self.domain = torch.tensor(doms)  # [P]
        self.subdomain = torch.tensor(subs)  # [P], globally unique, nested in domain
        self.max_len = int(self.lengths.max())
        self.n_err = int(self.tolerance.max()) + 2
        self.n_domains = len(cfg.domains)
        self.targets = self._hierarchical_targets(gen)  # [P, T]
        # correct-token logit b with softmax prob p0: e^b / (e^b + V - 1) = p0
        base = torch.tensor([math.log(p * (cfg.vocab - 1) / (1 - p)) for p in p0],
                            dtype=torch.float64)
        bias = base + cfg.prompt_jitter * torch.randn(self.n_prompts, generator=gen,
                                                      dtype=torch.float64)
        logits = cfg.init_noise * torch.randn(self.n_prompts, self.max_len, self.n_err, cfg.vocab,
                                              generator=gen, dtype=torch.float64)
        onehot = torch.nn.functional.one_hot(self.targets, cfg.vocab).to(torch.float64)
        logits = logits + bias[:, None, None, None] * onehot[:, :, None, :]
        self.init_logits = logits.reshape(-1, cfg.vocab)  # [P*T*E, V]
        # row of the shared table (domain, t, e) for every row (prompt, t, e)
        rows = torch.arange(self.n_prompts * self.max_len * self.n_err)
        p_of = rows // (self.max_len * self.n_err)
        rest = rows % (self.max_len * self.n_err)
        self.shared_row = self.domain[p_of] * (self.max_len * self.n_err) + rest  # [P*T*E]

    def _hierarchical_targets(self, gen: torch.Generator) -> Tensor:
        v, t_max = self.cfg.vocab, self.max_len

        def vary(base: Tensor, frac: float) -> Tensor:
            change = torch.rand(base.shape, generator=gen) < frac
            shift = torch.randint(1, v, base.shape, generator=gen)  # a different token
            return torch.where(change, (base + shift) % v, base)

        canon = torch.randint(v, (self.n_domains, t_max), generator=gen)
        n_sub = int(self.subdomain.max()) + 1
        sub_dom = torch.zeros(n_sub, dtype=torch.long)
        sub_dom[self.subdomain] = self.domain
        sub = vary(canon[sub_dom], self.cfg.subdomain_variation)
        return vary(sub[self.subdomain], self.cfg.prompt_variation)

    def init_params(self) -> tuple[Tensor, Tensor]:
        """Fresh ``(per-prompt [P*T*E, V], shared [D*T*E, V])`` tables of the initial policy."""
        shared = torch.zeros(self.n_domains * self.max_len * self.n_err, self.vocab,
                             dtype=torch.float64)
        return self.init_logits.clone(), shared

    def logits(self, prompt_table: Tensor, shared_table: Tensor) -> Tensor:
        """``[P*T*E, V]`` policy logits: per-prompt table plus the domain's shared table."""
        if not self.cfg.shared:
            return prompt_table
        return prompt_table + shared_table[self.shared_row]

    @property
    def n_states(self) -> int:
        return self.n_prompts * self.max_len * self.n_err

    def state_index(self, prompt: Tensor, t: int | Tensor, err: Tensor) -> Tensor:
        """Flat row of the logits table for ``(prompt, t, e)``."""
        return (prompt * self.max_len + t) * self.n_err + err

    def tokens_per_prompt(self) -> Tensor:
        return self.lengths.clone()


@dataclasses.dataclass(frozen=True)
class Rollout:
    """A batch of sampled completions; ``[B, T]`` tensors are padded past each row's length."""

    prompt: Tensor  # [B] long
    tokens: Tensor  # [B, T] long (0 on padding)
    states: Tensor  # [B, T] long flat state index (0 on padding)
    mask: Tensor  # [B, T] bool
    errors: Tensor  # [B] long, wrong tokens (capped at tolerance + 1)
    reward: Tensor  # [B] float64, 1 on success

    @property
    def num_tokens(self) -> int:
        """Tokens actually sampled (the token-efficiency counter)."""
        return int(self.mask.sum())


@torch.no_grad()
def sample(task: SequenceTask, logits: Tensor, prompts: Tensor, gen: torch.Generator) -> Rollout:
    """Sample one completion per entry of ``prompts`` (``[B]``) from the table ``logits``.

    ``logits``: ``[n_states, V]``. Sampling is by inverse CDF with ``gen``.
    """
    b = prompts.shape[0]
    t_max = task.max_len
    lengths = task.lengths[prompts]
    cap = task.tolerance[prompts] + 1
    err = torch.zeros(b, dtype=torch.long)
    tokens = torch.zeros(b, t_max, dtype=torch.long)
    states = torch.zeros(b, t_max, dtype=torch.long)
    mask = torch.arange(t_max)[None, :] < lengths[:, None]
    probs_all = torch.softmax(logits.detach(), dim=-1)
    for t in range(t_max):
        live = mask[:, t]
        st = task.state_index(prompts, t, err)
        cdf = probs_all[st].cumsum(-1)
        u = torch.rand(b, 1, generator=gen, dtype=cdf.dtype)
        a = (u > cdf).sum(-1).clamp(max=task.vocab - 1)
        wrong = (a != task.targets[prompts, t]) & live
        err = torch.minimum(err + wrong.long(), cap)
        tokens[:, t] = torch.where(live, a, 0)
        states[:, t] = torch.where(live, st, 0)
    reward = (err <= task.tolerance[prompts]).to(torch.float64)
    return Rollout(prompts, tokens, states, mask, err, reward)


def token_log_probs(logits: Tensor, rollout: Rollout) -> Tensor:
    """``[B, T]`` log pi(token | state) under ``logits`` (differentiable; 0 on padding)."""
    logp = torch.log_softmax(logits[rollout.states], dim=-1)
    out = logp.gather(-1, rollout.tokens[..., None])[..., 0]
    return torch.where(rollout.mask, out, torch.zeros((), dtype=out.dtype))


def visitation(task: SequenceTask, logits: Tensor) -> tuple[Tensor, Tensor]:
    """Exact ``(occupancy [P, T, E], success [P])`` of the policy ``logits``.

    ``occupancy[p, t, e]`` is the probability that a completion of prompt ``p`` is at
    ``(t, e)`` (zero past ``L_p``); ``success[p] = P(errors <= k_p)``. Forward recursion:
    from ``(t, e)`` a correct token keeps ``e``, a wrong one moves to ``min(e + 1, k_p + 1)``.
    """
    with torch.no_grad():
        probs = torch.softmax(logits, -1).reshape(task.n_prompts, task.max_len, task.n_err,
                                                  task.vocab)
        p_ok = probs.gather(-1, task.targets[:, :, None, None].expand(-1, -1, task.n_err, 1))[..., 0]
        e_idx = torch.arange(task.n_err)
        dead = e_idx[None, :] == (task.tolerance[:, None] + 1)  # [P, E]
        dist = torch.zeros(task.n_prompts, task.n_err, dtype=probs.dtype)
        dist[:, 0] = 1.0
        occ = torch.zeros(task.n_prompts, task.max_len, task.n_err, dtype=probs.dtype)
        for t in range(task.max_len):
            live = (t < task.lengths)[:, None]
            occ[:, t] = torch.where(live, dist, torch.zeros(()))
            ok = dist * p_ok[:, t]
            bad = dist * (1 - p_ok[:, t])
            # the dead bucket absorbs: its wrong mass stays, nothing moves past it
            stays = torch.where(dead, bad, torch.zeros(()))
            moved = torch.zeros_like(dist)
            moved[:, 1:] = (bad - stays)[:, :-1]
            new = ok + moved + stays
            dist = torch.where(live, new, dist)
        ok_bucket = e_idx[None, :] <= task.tolerance[:, None]
        success = (dist * ok_bucket).sum(-1)
    return occ, success


def success_prob(task: SequenceTask, logits: Tensor) -> Tensor:
    """``[P]`` exact success probability of every prompt."""
    return visitation(task, logits)[1]


def group_advantages(reward: Tensor, group_ids: Tensor, *, scale: bool = True,
                     eps: float = 1e-6) -> Tensor:
    """``[B]`` group-relative advantage (GRPO): ``(R - mean_g R) / (std_g R + eps)``.

    ``std`` is the unbiased group standard deviation (as in TRL and verl); ``scale=False``
    gives the Dr.GRPO form ``R - mean_g R``. A group whose rewards are all equal gets 0.
    """
    if reward.shape != group_ids.shape or reward.dim() != 1:
        raise ValueError("reward and group_ids must both be [B]")
    _, inv = torch.unique(group_ids, return_inverse=True)
    n = int(inv.max()) + 1
    cnt = torch.zeros(n, dtype=reward.dtype).index_add(0, inv, torch.ones_like(reward))
    mean = torch.zeros(n, dtype=reward.dtype).index_add(0, inv, reward) / cnt
    centred = reward - mean[inv]
    if not scale:
        return centred
    var = torch.zeros(n, dtype=reward.dtype).index_add(0, inv, centred**2)
    std = (var / (cnt - 1).clamp_min(1)).sqrt()
    return centred / (std[inv] + eps)
