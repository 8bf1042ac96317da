"""The ``data_parallel_exact`` property: two ranks equal one process.

A drawn batch is split by rows into two shards (each trimmed to its own padded width) and
given to two worker processes that form a gloo process group and call
:func:`fibration_theory.integrations.distributed.compute` (``grad_reduction="sum"``), then
``backward``. The global loss they report, the sum of their shares, and their gradients,
put back in place, must equal the single-process loss and gradient of the whole batch.

The workers are forked from the certifying process, so they hold every objective registered
there, a user's included. Hypothesis runs in the parent; the workers only evaluate.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import tempfile
from datetime import timedelta

import torch
from hypothesis import strategies as st

from fibration_theory.conformance import strategies as S
from fibration_theory.conformance.properties import Property, close, grad_close, worst_entry
from fibration_theory.conformance.search import Budget, Objective, Result, Violation, search

Tensor = torch.Tensor

WORLD = 2

#: seconds a worker waits in a collective (a rank that raised leaves the other waiting) and
#: the parent waits for an answer; tiny batches take milliseconds
TIMEOUT_S = 20.0


def _worker(rank: int, store: str, conn) -> None:
    torch.set_num_threads(1)
    import torch.distributed as dist

    from fibration_theory.integrations import distributed

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=TIMEOUT_S))
    try:
        while True:
            job = conn.recv()
            if job is None:
                break
            name, params, shard = job
            try:
                x = shard["log_ratio"]
                lp = x.clamp(max=0).requires_grad_(True)
                out = distributed.compute(
                    name, lp, (-x).clamp(max=0), shard["advantages"], shard["mask"],
                    group_ids=shard["group_ids"], domain_ids=shard["domain_ids"],
                    grad_reduction="sum", **params)
                out.loss.backward()
                grad = torch.zeros_like(x) if lp.grad is None else lp.grad
                conn.send(("ok", float(out.loss.detach()), out.metrics["loss"], grad))
            except Exception as exc:  # noqa: BLE001 -- sent back, the parent names it
                conn.send(("error", f"{type(exc).__name__}: {exc}", None, None))
    finally:
        dist.destroy_process_group()


class Pair:
    """Two forked gloo ranks; ``run`` sends each its shard and collects the answers."""

    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self._dir = tempfile.TemporaryDirectory(prefix="fibration-certify-")
        store = os.path.join(self._dir.name, "store")
        self._conns, self._procs = [], []
        for rank in range(WORLD):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(rank, store, child), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def run(self, name: str, params: dict, shards: list[dict]) -> list[tuple]:
        for conn, shard in zip(self._conns, shards):
            conn.send((name, params, shard))
        answers = []
        for rank, conn in enumerate(self._conns):
            if not conn.poll(TIMEOUT_S * 2):
                raise TimeoutError(f"rank {rank} gave no answer in {2 * TIMEOUT_S:.0f} s")
            answers.append(conn.recv())
        return answers

    def close(self) -> None:
        for conn, proc in zip(self._conns, self._procs):
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._dir.cleanup()


def _shard(case: S.Case) -> dict[str, Tensor]:
    return dataclasses.asdict(case)


def _split(case: S.Case):
    return st.tuples(st.just(case), st.integers(1, case.rows - 1))


def run(objective: Objective, budget: Budget) -> Result:
    try:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_gloo_available()):
            return Result("n/a", None, {"message": "torch.distributed with gloo is unavailable"})
    except ImportError:
        return Result("n/a", None, {"message": "torch.distributed is unavailable"})
    pair = [Pair()]

    def check(example: tuple[S.Case, int]) -> None:
        case, k = example
        whole = objective.evaluate(case)
        parts = [case.take_rows(list(range(k)), trim=True),
                 case.take_rows(list(range(k, case.rows)), trim=True)]
        try:
            answers = pair[0].run(objective.name, dict(objective.params),
                                  [_shard(p) for p in parts])
        except TimeoutError as exc:  # a hung pair is replaced before the next example
            pair[0].close()
            pair[0] = Pair()
            raise Violation(f"the data-parallel run hung: {exc}") from None
        errors = [f"rank {r}: {a[1]}" for r, a in enumerate(answers) if a[0] == "error"]
        if errors:
            raise Violation(f"the data-parallel helper raised: {errors[0]}")
        shares = sum(a[1] for a in answers)
        for label, got in (("global loss", answers[0][2]), ("sum of the ranks' shares", shares)):
            if not close(got, whole.loss, whole.scale):
                raise Violation(f"{label} {got!r} differs from the whole batch's {whole.loss!r}",
                                loss=whole.loss, sharded=got)
        grad = torch.zeros_like(whole.grad)
        grad[:k, :parts[0].mask.shape[1]] = answers[0][3]
        grad[k:, :parts[1].mask.shape[1]] = answers[1][3]
        if not grad_close(grad, whole.grad):
            raise Violation("the ranks' gradients differ from the whole batch's",
                            **worst_entry(grad, whole.grad))

    try:
        counter, _ = search(S.batches(min_rows=2).flatmap(_split), check, budget,
                            lambda ex: {"batch": ex[0].to_dict(), "rows_on_rank0": ex[1]})
    finally:
        pair[0].close()
    return Result("fails" if counter else "holds", None, counter)


DATA_PARALLEL_EXACT = Property(
    "data_parallel_exact", "two data-parallel shards equal the whole batch", "eqs 6, 30, 33",
    "Split by rows over two ranks (each shard trimmed to its own width) and computed with "
    "the toolkit's data-parallel helper (`integrations.distributed.compute`, two forked "
    "gloo processes), the global loss, the sum of the ranks' shares and the ranks' "
    "gradients equal the single-process loss and gradient of the whole batch (float64, "
    "`IDENTITY_RTOL`). The weights divide by batch-wide counts (`|Tj|`, `T`; eq 6, eq 30) "
    "and FiberPO-Domain's gates read whole groups and domains (eq 33), so a group split "
    "across ranks must see the same aggregates as on one process.",
    run)
