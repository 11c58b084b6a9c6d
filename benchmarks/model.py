"""The model's forward+backward beside transformers' BertModel, and WRA's IPOT beside exact OT solvers.

1. Text-only forward+backward of a base-size config (12 layers, 768 hidden, 12 heads, 3072 intermediate,
   dropout 0.1, train mode) on the same random WordPiece ids, beside the same-size ``transformers.BertModel``
   (random weights, its default attention). Both reduce the last hidden states to a scalar and backpropagate.
   Interleaved rounds (benchmarks/rounds.py), median samples/s and the ratio.
2. IPOT (UNITER App. A.6: beta 0.5, 50 iterations, batched in torch) beside the exact transport LP
   (``scipy.optimize.linprog``, HiGHS) and, for square uniform problems, ``linear_sum_assignment``: the
   relative excess of IPOT's cost over the exact optimum, and the time per problem.

    python -m benchmarks.model --batch 8 --seq 64 --steps 3 --repeat 3 --problems 32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmarks.rounds import interleaved, median_rate


def bench_encoder(batch: int, seq: int, steps: int, repeat: int) -> None:
    import torch
    from transformers import BertConfig, BertModel

    from schemas.batch import Batch
    from training.model import ModelConfig, build_model

    torch.manual_seed(0)
    ours = build_model(ModelConfig()).train()
    theirs = BertModel(BertConfig(), add_pooling_layer=False).train()
    ids = torch.randint(1000, 30000, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.bool)
    mask[batch // 2:, seq * 3 // 4:] = False  # some padding, as a real batch has
    ids = ids.masked_fill(~mask, 0)
    text = Batch(task="texts", keys=[str(i) for i in range(batch)], input_ids=ids, text_mask=mask)

    def run_ours(_out: str) -> int:
        for _ in range(steps):
            ours.zero_grad(set_to_none=True)
            ours(text).text.float().pow(2).mean().backward()
        return steps * batch

    def run_theirs(_out: str) -> int:
        for _ in range(steps):
            theirs.zero_grad(set_to_none=True)
            theirs(input_ids=ids, attention_mask=mask.long()).last_hidden_state.pow(2).mean().backward()
        return steps * batch

    run_ours(""), run_theirs("")  # warm up both (allocator, kernels)
    with tempfile.TemporaryDirectory() as work:
        rounds = interleaved({"unicorpus model": run_ours, "transformers BertModel": run_theirs}, repeat, work)
    base = median_rate(rounds["transformers BertModel"])
    print(f"text-only forward+backward, batch {batch} x {seq} tokens, base size, torch threads "
          f"{torch.get_num_threads()}")
    for name, result in rounds.items():
        print(f"  {name:<24} {median_rate(result):6.2f} samples/s  {median_rate(result) / base:.2f}x  "
              f"rounds: {', '.join(f'{rate:.2f}' for _, rate in result)}")


def bench_ot(problems: int) -> None:
    import numpy as np
    import torch
    from scipy.optimize import linear_sum_assignment, linprog

    from training.objectives.wra import cosine_cost, ipot

    def lp(cost: np.ndarray) -> float:
        n, m = cost.shape
        rows = np.kron(np.eye(n), np.ones(m))
        cols = np.kron(np.ones(n), np.eye(m))
        res = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.r_[np.full(n, 1 / n), np.full(m, 1 / m)],
                      bounds=(0, None), method="highs")
        return float(res.fun)

    g = torch.Generator().manual_seed(0)
    print(f"optimal transport, {problems} problems per shape, cosine cost of random 768-d vectors")
    for n, m in ((10, 10), (20, 36), (40, 100)):
        cost = cosine_cost(torch.randn(problems, n, 768, generator=g), torch.randn(problems, m, 768, generator=g))
        rows, cols = torch.ones(problems, n, dtype=torch.bool), torch.ones(problems, m, dtype=torch.bool)
        approx = (ipot(cost, rows, cols) * cost).sum((1, 2))  # warm-up
        times = []
        for _ in range(3):
            started = time.perf_counter()
            approx = (ipot(cost, rows, cols) * cost).sum((1, 2))
            times.append((time.perf_counter() - started) / problems)
        ipot_s = statistics.median(times)
        started = time.perf_counter()
        exact = [lp(c.double().numpy()) for c in cost]
        lp_s = (time.perf_counter() - started) / problems
        excess = [(float(a) - e) / e for a, e in zip(approx, exact, strict=True)]
        line = (
            f"  {n:>3} x {m:<3} IPOT {ipot_s * 1e3:7.3f} ms/problem (batched)  linprog {lp_s * 1e3:7.2f} ms/problem  "
            f"IPOT excess over exact: median {statistics.median(excess):.2%}, max {max(excess):.2%}"
        )
        if n == m:
            started = time.perf_counter()
            assignment = [float(c[linear_sum_assignment(c.numpy())].sum()) / n for c in cost]
            lsa_s = (time.perf_counter() - started) / problems
            gap = max(abs(a - e) for a, e in zip(assignment, exact, strict=True))
            line += f"  linear_sum_assignment {lsa_s * 1e3:.3f} ms/problem (max |diff| to linprog {gap:.1e})"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="forward+backward steps per round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--skip-encoder", action="store_true")
    parser.add_argument("--skip-ot", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if not args.skip_encoder:
        bench_encoder(args.batch, args.seq, args.steps, args.repeat)
    if not args.skip_ot:
        bench_ot(args.problems)


if __name__ == "__main__":
    main()
