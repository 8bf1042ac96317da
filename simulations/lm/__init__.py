"""Small-LM validation runs (``fibration lm``): a tiny transformer trained from scratch, or a
local pretrained checkpoint, RL-fine-tuned on verifiable multi-domain tasks with any
objective of the registry.

One module per concern: :mod:`.codec` (tokenizers), :mod:`.tasks` (domains, prompts,
rewards), :mod:`.models` (building and loading models; the only place that imports
``transformers``), :mod:`.sampling` (KV-cache sampling and token log-probabilities),
:mod:`.warmstart` (supervised warm start), :mod:`.rl` (the RL loop, one function),
:mod:`.report` (summary, figures, Markdown tables), :mod:`.cli` (the command),
:mod:`.ablation` (FiberPO's gates opened one at a time).
"""
