"""Benchmark: token-level SelectIT rating (one prefill per sample) against generate()-and-parse rating.

    python -m fedcurate.simulations.bench_rating                      # tiny model, 64 synthetic samples
    python -m fedcurate.simulations.bench_rating --model /models/qwen2.5-0.5b --samples 32

Both paths use the same model, the same samples and the same prompt (SelectIT's first rating prompt,
scores 1..5) through the `transformers` backend with the same batch size. The token-level path reads
the five rating-token probabilities from one forward pass; the generate path decodes up to
`--max-new-tokens` tokens greedily and parses a score, as a judge must when it writes "Score: N" and a
short rationale (default 32 tokens). Each path is warmed up once, then the two paths are timed
alternately `--repeats` times (each path's best run kept, so other load on the machine hits both). The last line printed is a JSON object with `token_level_samples_per_s`,
`generate_samples_per_s` and `ratio` (token level / generate).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from fedcurate.common.config import RaterConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.backends.transformers_local import TransformersBackend
from fedcurate.common.rating.base import Rater
from fedcurate.common.rating.raters import PromptRater, SelectITRater
from fedcurate.simulations.synthetic import generate_clean

logger = logging.getLogger(__name__)


def _best_rates(raters: Sequence[Rater], samples: Sequence[Sample], repeats: int) -> tuple[list[float], list[Any]]:
    """Samples per second of each rater's fastest pass, and each rater's ratings.

    The raters' passes alternate, so a burst of load from other processes slows both paths alike.
    """
    for rater in raters:
        rater.rate(samples[: max(1, len(samples) // 8)])  # warm-up: first-call allocations, lazy loading
    best = [float("inf")] * len(raters)
    ratings: list[Any] = [[] for _ in raters]
    for _ in range(repeats):
        for k, rater in enumerate(raters):
            t0 = time.perf_counter()
            ratings[k] = rater.rate(samples)
            best[k] = min(best[k], time.perf_counter() - t0)
    return [len(samples) / b for b in best], ratings


def bench(model: str, num_samples: int, batch_size: int, max_new_tokens: int, repeats: int,
          dtype: str = "auto", seed: int = 0) -> dict[str, Any]:
    """Time both rating paths on the same model, samples and prompt; returns the figures."""
    samples = generate_clean(num_samples, seed)
    base = RaterConfig(name="bench", model=model, dtype=dtype, batch_size=batch_size,
                       max_new_tokens=max_new_tokens, temperature=0.0, selectit_prompts=1, selectit_levels=5)
    backend = TransformersBackend(base)
    token_rater = SelectITRater(dataclasses.replace(base, kind="selectit", prompt="selectit"), backend=backend)
    gen_rater = PromptRater(dataclasses.replace(base, kind="prompt", prompt="selectit"), backend=backend)
    assert gen_rater.template.text == token_rater.prompts[0].text, "both paths must see the same prompt"
    (token_rate, gen_rate), (_, gen_ratings) = _best_rates([token_rater, gen_rater], samples, repeats)
    _, tok = backend.load()
    new_tokens = [len(tok(r.raw, add_special_tokens=False)["input_ids"]) for r in gen_ratings]
    prompt_tokens = [len(tok(token_rater.prompts[0].render(s))["input_ids"]) for s in samples]
    return {
        "model": model, "parameters": backend.parameter_count(), "samples": num_samples,
        "batch_size": batch_size, "max_new_tokens": max_new_tokens,
        "mean_prompt_tokens": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "mean_generated_tokens": round(sum(new_tokens) / len(new_tokens), 1),
        "generate_parse_failures": sum(bool(r.reason) for r in gen_ratings),
        "token_level_samples_per_s": round(token_rate, 2),
        "generate_samples_per_s": round(gen_rate, 2),
        "ratio": round(token_rate / gen_rate, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints a summary, then the JSON figures as the last line."""
    parser = argparse.ArgumentParser(prog="bench_rating", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model id or path (default: the tiny offline model)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generation budget of the judge path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    figures = bench(args.model, args.samples, args.batch_size, args.max_new_tokens, args.repeats,
                    args.dtype, args.seed)
    print(f"model {figures['model']} ({figures['parameters']:,} parameters), {figures['samples']} samples, "
          f"batch {figures['batch_size']}, prompts of {figures['mean_prompt_tokens']} tokens on average")
    print(f"token level (1 prefill):            {figures['token_level_samples_per_s']:.2f} samples/s")
    print(f"generate ({figures['mean_generated_tokens']} of max {figures['max_new_tokens']} new tokens) + parse: "
          f"{figures['generate_samples_per_s']:.2f} samples/s")
    print(json.dumps({k: figures[k] for k in ("token_level_samples_per_s", "generate_samples_per_s", "ratio")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
