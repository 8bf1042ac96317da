"""Small-LM study, the parts without a model: tokenizer, tasks, rewards, advantages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fibration_theory.simulations.lm import tasks as tk
from fibration_theory.simulations.lm.codec import ALPHABET, CharCodec
from fibration_theory.simulations.lm.rl import group_advantages
from hypothesis import given, settings
from hypothesis import strategies as st

CODEC = CharCodec()


@given(st.text(alphabet=ALPHABET, max_size=40))
def test_char_codec_round_trip(text):
    ids = CODEC.encode(text)
    assert len(ids) == len(text)
    assert all(2 <= i < CODEC.vocab_size for i in ids)
    assert CODEC.decode(ids) == text
    # decoding stops at <eos> and skips padding
    assert CODEC.decode([CODEC.pad_id] + ids + [CODEC.eos_id] + CODEC.encode("x")) == text


def test_char_codec_rejects_unknown_characters_and_ids():
    with pytest.raises(ValueError, match="text"):
        CODEC.encode("12+é")
    with pytest.raises(ValueError, match="ids"):
        CODEC.decode([CODEC.vocab_size])
    with pytest.raises(ValueError, match="alphabet"):
        CharCodec("aa")


def test_char_codec_save_load(tmp_path):
    CODEC.save(tmp_path / "c.json")
    assert CharCodec.load(tmp_path / "c.json").alphabet == CODEC.alphabet


def _solve(domain: str, key: str) -> str:
    """Each domain's answer computed independently of ``tasks`` (from the compact key)."""
    if domain in ("add", "add1"):
        a, b = key.split("+")
        return str(int(a) + int(b))
    if domain == "reverse":
        return key[::-1]
    if domain == "count":
        return str(sum(c == "a" for c in key))
    if domain == "sort":
        return "".join(sorted(key))
    if domain == "copy":
        return key
    raise AssertionError(domain)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), fmt=st.sampled_from(["compact", "fewshot"]))
def test_every_domain_answer_and_reward(seed, fmt):
    ts = tk.TaskSet(tuple(tk.DOMAINS), fmt)
    for p in ts.draw(np.random.default_rng(seed), 3, "train"):
        name = ts.domains[p.domain]
        assert p.answer == _solve(name, p.key)
        assert tk.reward(ts.target(p), p.answer) == 1.0  # the SFT target earns the reward
        assert tk.reward(f"  {p.answer}\n", p.answer) == 1.0
        assert tk.reward(p.answer + "0", p.answer) == 0.0
        assert tk.reward("", p.answer) == 0.0
        assert p.key in ts.prompt(p) if fmt == "compact" else p.question in ts.prompt(p)


def test_train_and_eval_pools_are_disjoint():
    ts = tk.TaskSet(("add", "sort", "count", "add1"))
    train = ts.draw(np.random.default_rng(0), 300, "train")
    held = ts.draw(np.random.default_rng(1), 20, "eval")
    pairs = {(p.domain, p.key) for p in train}
    assert not pairs & {(p.domain, p.key) for p in held}
    assert all(tk.in_eval_pool(ts.domains[p.domain], p.key) for p in held)
    assert [p.domain for p in held] == sorted(p.domain for p in held)  # domain-major


def test_fewshot_prompt_layout():
    ts = tk.TaskSet(("add1", "copy"), "fewshot", shots=2)
    p = ts.draw(np.random.default_rng(0), 1, "eval")[1]
    text = ts.prompt(p)
    assert text.endswith(f"Q: {p.question}\nA:")
    assert text.count("Q: ") == 3 and text.count("\nA: ") == 2
    # the shots come from the training pool and solve their questions
    for block in text.split("Q: ")[1:-1]:
        question, answer = block.rstrip("\n").split("\nA: ")
        assert question.startswith("Repeat the word ") and answer == question[16:-1]


def test_taskset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="domains"):
        tk.TaskSet(("nope",))
    with pytest.raises(ValueError, match="domains"):
        tk.TaskSet(("add", "add"))
    with pytest.raises(ValueError, match="fmt"):
        tk.TaskSet(fmt="chat")
    with pytest.raises(ValueError, match="per_domain"):
        tk.TaskSet(("add", "sort")).draw(np.random.default_rng(0), [1], "train")
    with pytest.raises(ValueError, match="split"):
        tk.TaskSet().draw(np.random.default_rng(0), 1, "test")


@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0.0, 1.0])), min_size=1,
                max_size=30))
def test_group_advantages_match_a_literal_loop(rows):
    group = torch.tensor([g for g, _ in rows])
    _, group = torch.unique(group, return_inverse=True)
    rewards = torch.tensor([r for _, r in rows], dtype=torch.float64)
    got = group_advantages(rewards, group)
    for i in range(len(rows)):
        same = rewards[group == group[i]]
        mean, std = same.mean(), same.std(unbiased=False)
        assert abs(float(got[i]) - float((rewards[i] - mean) / (std + 1e-6))) < 1e-12


def test_results_page_tables_are_the_data():
    """docs/results-lm.md shows the tables rendered from the committed summaries (pasted,
    not retyped), so its numbers are the data's."""
    import json
    from pathlib import Path

    from fibration_theory.simulations.lm.ablation import render_markdown as ablation_table
    from fibration_theory.simulations.lm.report import render_markdown

    docs = Path(__file__).resolve().parents[1] / "docs"
    page = (docs / "results-lm.md").read_text()
    for run in ("quick", "quick-rerun", "smollm2", "smollm2-t960"):
        summary = json.loads((docs / "results-lm" / run / "summary.json").read_text())
        assert render_markdown(summary) in page, run
    table = json.loads((docs / "results-lm" / "quick" / "ablation.json").read_text())
    assert ablation_table(table) in page
