"""Report-decoding benchmark: greedy tokens/s with the KV cache vs recomputing the prefix every step.

    python benchmarks/decoding.py [--repeats 3] [--new-tokens 128] [--batch 8] [--threads 1]

A ``ReportDecoder`` of width 256, depth 4, 4 heads and MiniLM's vocabulary (30522), random weights, in
eval mode; memory: 80 image tokens of width 192 (the demo's token count), batch 8. Greedy decoding of
128 new tokens with ``eos_id=-1`` (never stops early), timed with the cache (self-attention keys/values
appended per step, cross-attention keys/values computed once) and without it (``use_cache=False``:
the whole prefix and the memory projections recomputed every step, the LM head on the last position
only). Both measured in the same run, median of ``--repeats``; the goal is a ratio >= 3.
``--threads`` (default 1; 0 keeps torch's default): a cached step is a chain of small matmuls
(8 rows), which a second thread on a busy shared 2-core machine slows down (measured: 128 vs 30 ms
per step at load ~6), so one thread is the steadier setting there.
Results: benchmarks/results/decoding-<date>.json.
"""

from __future__ import annotations

import argparse

import torch

from machine import median_seconds, save_result

from ctvlp.models.decoder import DecoderConfig, ReportDecoder

GOAL = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--memory-tokens", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=30522, width=256, depth=4, heads=4, max_length=256, memory_width=192)
    model = ReportDecoder(cfg).eval()
    memory = torch.randn(args.batch, args.memory_tokens, cfg.memory_width, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(args.batch, args.memory_tokens, dtype=torch.bool)
    outputs = {}

    def run(use_cache: bool):
        outputs[use_cache] = model.generate(memory, mask, bos_id=101, eos_id=-1, max_new_tokens=args.new_tokens,
                                            use_cache=use_cache)

    model.generate(memory, mask, 101, -1, 8, use_cache=True)  # warm-up
    model.generate(memory, mask, 101, -1, 8, use_cache=False)
    t_cached = median_seconds(lambda: run(True), args.repeats)
    t_uncached = median_seconds(lambda: run(False), args.repeats)
    tokens = args.batch * args.new_tokens
    assert all(len(s) == args.new_tokens for s in outputs[True] + outputs[False])
    same = sum(a == b for a, b in zip(outputs[True], outputs[False]))
    row = {"config": {"width": cfg.width, "depth": cfg.depth, "heads": cfg.heads, "vocab_size": cfg.vocab_size,
                      "memory_tokens": args.memory_tokens, "memory_width": cfg.memory_width,
                      "batch": args.batch, "new_tokens": args.new_tokens, "repeats": args.repeats},
           "cached_seconds": t_cached, "uncached_seconds": t_uncached,
           "cached_tokens_per_s": tokens / t_cached, "uncached_tokens_per_s": tokens / t_uncached,
           "speedup": t_uncached / t_cached, "identical_sequences": f"{same}/{args.batch}"}
    print(f"greedy, batch {args.batch} x {args.new_tokens} new tokens: KV cache {row['cached_tokens_per_s']:.0f} "
          f"tokens/s ({t_cached:.2f} s), no cache {row['uncached_tokens_per_s']:.0f} tokens/s ({t_uncached:.2f} s); "
          f"ratio {row['speedup']:.1f}x (goal >= {GOAL:.0f}x); identical sequences {same}/{args.batch}")
    save_result("decoding", {"goal": GOAL, **row})


if __name__ == "__main__":
    main()
