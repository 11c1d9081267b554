"""Serving metrics (notebook 06): per request, per step, per run.

Per request (``RequestMetrics``): time to first token (TTFT), inter-token latency (ITL), end-to-end
latency. Per step (``StepRecord``): which requests ran a prefill or a decode and how many tokens of
the budget each used, blocks in use, preemptions. Per run (``RunStats``): throughput, KV-block
utilisation, preemptions, prefix-cache hit rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class StepRecord:
    step: int
    start: float                  # engine clock (s)
    duration: float
    entries: list                 # (request_id, "prefill" | "decode", tokens) in batch order
    budget: int                   # max_num_batched_tokens
    blocks_used: int
    num_blocks: int
    block_size: int
    tokens_stored: int            # tokens holding keys/values in those blocks
    preempted: list = field(default_factory=list)   # request ids preempted this step

    @property
    def tokens(self) -> int:
        return sum(n for _, _, n in self.entries)

    @property
    def budget_used(self) -> float:
        return self.tokens / self.budget


@dataclass
class RunStats:
    """What one ``Engine.generate`` (or a run of steps) achieved."""
    num_requests: int
    num_rejected: int
    generated_tokens: int
    prompt_tokens: int
    wall_s: float
    steps: int
    num_preemptions: int
    prefix_hit_rate: float        # prompt tokens found in the prefix cache / prompt tokens looked up
    block_utilisation: float      # mean over steps of blocks in use / blocks in the pool
    slot_utilisation: float       # mean over steps of tokens stored / slots in the blocks in use
    mean_ttft_s: float
    mean_itl_s: float
    mean_e2e_s: float

    @property
    def throughput(self) -> float:
        """Generated tokens per second of wall time."""
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else float("inf")

    def __str__(self):
        return (f"{self.num_requests} requests ({self.num_rejected} rejected), {self.generated_tokens} tokens in "
                f"{self.wall_s:.2f} s = {self.throughput:.0f} tokens/s over {self.steps} steps; mean TTFT "
                f"{self.mean_ttft_s * 1e3:.0f} ms, ITL {self.mean_itl_s * 1e3:.1f} ms, end-to-end "
                f"{self.mean_e2e_s * 1e3:.0f} ms; {self.num_preemptions} preemptions; prefix-cache hit rate "
                f"{self.prefix_hit_rate:.0%}; KV blocks in use {self.block_utilisation:.0%}, slots of used blocks "
                f"holding tokens {self.slot_utilisation:.0%}")


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def run_stats(outputs, trace, wall_s: float, num_preemptions: int, prefix_queries: int, prefix_hits: int) -> RunStats:
    served = [o for o in outputs if o.finish_reason != "rejected"]
    return RunStats(
        num_requests=len(outputs), num_rejected=len(outputs) - len(served),
        generated_tokens=sum(len(o.tokens) for o in served), prompt_tokens=sum(len(o.prompt_tokens) for o in served),
        wall_s=wall_s, steps=len(trace), num_preemptions=num_preemptions,
        prefix_hit_rate=prefix_hits / prefix_queries if prefix_queries else 0.0,
        block_utilisation=_mean([s.blocks_used / s.num_blocks for s in trace]),
        slot_utilisation=_mean([s.tokens_stored / (s.blocks_used * s.block_size) for s in trace if s.blocks_used]),
        mean_ttft_s=_mean([o.metrics.ttft_s for o in served]), mean_itl_s=_mean([o.metrics.itl_s for o in served]),
        mean_e2e_s=_mean([o.metrics.e2e_s for o in served]))
