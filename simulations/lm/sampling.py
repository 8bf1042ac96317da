"""Batched sampling with a KV cache, and token log-probabilities of sampled responses.

Prompts of different lengths are left-padded: the attention mask hides the padding and the
position ids count only real tokens, so a prompt is encoded the same whatever its batch.
Sampling is at temperature 1 (the policy itself; the ratio of any objective is then
``pi_theta / pi_old`` of the very distribution that sampled). A response ends with its
first stop token, which belongs to the response (its probability is part of the policy);
the tokens after it are padding outside the mask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

Tensor = torch.Tensor


@dataclasses.dataclass
class Rollout:
    """A batch of sampled responses.

    ``prompt``/``prompt_mask``: ``[B, P]`` left-padded prompt ids and their mask;
    ``tokens``/``mask``: ``[B, L]`` response ids and the response mask (stop token included);
    ``log_prob``: ``[B, L]`` log-probabilities under the sampling policy (0 off the mask).
    """

    prompt: Tensor
    prompt_mask: Tensor
    tokens: Tensor
    mask: Tensor
    log_prob: Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    def rows(self, idx: Tensor) -> Rollout:
        return Rollout(self.prompt[idx], self.prompt_mask[idx], self.tokens[idx], self.mask[idx],
                       self.log_prob[idx])


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: Any = "cpu"
             ) -> tuple[Tensor, Tensor]:
    """``[B, P]`` ids and bool mask of ``seqs`` left-padded to the longest one."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("seqs: needs at least one sequence and no empty sequence")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, width - len(s):] = True
    return ids.to(device), mask.to(device)


def _positions(mask: Tensor) -> Tensor:
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def sample(model: Any, prompts: Sequence[Sequence[int]], *, max_new: int, stop_ids: frozenset[int],
           pad_id: int, generator: torch.Generator) -> Rollout:
    """Sample one response per prompt (``B`` prompts) with a KV cache.

    ``generator`` lives on the model's device and drives every draw, so a run is
    reproducible from its seed.
    """
    if max_new < 1:
        raise ValueError(f"max_new must be >= 1, got {max_new}")
    device = next(model.parameters()).device
    prompt, pmask = left_pad(prompts, pad_id, device)
    b = prompt.shape[0]
    stops = torch.tensor(sorted(stop_ids), device=device)
    attn = pmask.long()
    out = model(input_ids=prompt, attention_mask=attn, position_ids=_positions(pmask),
                use_cache=True, logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1]
    pos = pmask.long().sum(-1, keepdim=True)  # next position of each row
    tokens, lps, alive = [], [], torch.ones(b, dtype=torch.bool, device=device)
    masks = []
    for _ in range(max_new):
        logp = torch.log_softmax(logits.float(), -1)
        nxt = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
        nxt = torch.where(alive, nxt, torch.full_like(nxt, pad_id))
        tokens.append(nxt)
        lps.append(torch.where(alive, logp.gather(-1, nxt[:, None])[:, 0], 0.0))
        masks.append(alive.clone())
        alive = alive & ~torch.isin(nxt, stops)
        if not bool(alive.any()):
            break
        attn = torch.cat([attn, torch.ones((b, 1), dtype=attn.dtype, device=device)], 1)
        out = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos, cache=cache,
                    use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
        pos = pos + 1
    return Rollout(prompt, pmask, torch.stack(tokens, 1), torch.stack(masks, 1),
                   torch.stack(lps, 1))


def token_log_probs(model: Any, prompt: Tensor, prompt_mask: Tensor, tokens: Tensor, mask: Tensor,
                    *, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """``[B, L]`` log-probabilities of ``tokens`` after ``prompt`` (0 off ``mask``), and
    optionally the ``[B, L]`` entropy of each next-token distribution, in one forward pass.

    Differentiable; the caller decides about ``no_grad``. Float32 logits are reduced in
    float32 and the results returned in float64 for the objectives.
    """
    ids = torch.cat([prompt, tokens], 1)
    # padding after the stop token sits at the end of a row: causal attention keeps it out of
    # every kept position, so it may stay visible (as it was while sampling)
    attn = torch.cat([prompt_mask, torch.ones_like(mask)], 1)
    # only the positions that predict response tokens go through the LM head (the last
    # L + 1 positions, less the very last): with a large vocabulary that is most of the cost
    length = tokens.shape[1]
    logits = model(input_ids=ids, attention_mask=attn.long(), position_ids=_positions(attn),
                   logits_to_keep=length + 1).logits
    logits = logits[:, :-1].float()  # position t predicts token t + 1
    logp_all = torch.log_softmax(logits, -1)
    lp = logp_all.gather(-1, tokens[..., None])[..., 0]
    lp = torch.where(mask, lp, torch.zeros((), dtype=lp.dtype, device=lp.device)).double()
    ent = None
    if with_entropy:
        ent = -(logp_all.exp() * logp_all).sum(-1)
        ent = torch.where(mask, ent, torch.zeros((), dtype=ent.dtype, device=ent.device)).double()
    return lp, ent
