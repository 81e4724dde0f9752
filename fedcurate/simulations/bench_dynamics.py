"""Benchmark of CLUES scoring: the fast path against the naive batch-size-1 loop and plain training steps.

Command: python -m fedcurate.simulations.bench_dynamics [--samples 64] [--naive-samples 16] [--batch-size 8]
         [--threads 1] [--device cpu]                      (`fedcurate bench dynamics`)

Model: a Llama-architecture causal LM built in-process with a random init (4 layers, width 256, MLP 1024,
4 heads, vocabulary 32000), LoRA r = 8 (alpha 16) on q_proj and v_proj; every sample is 128 random token
ids, the loss on the last 64 (the "response"). One checkpoint is synthesised (random LoRA B, random Adam
moments). Measured on the same data and model, each after one warm-up batch:
- fast: `clues_scores` (Adam-preconditioned inner product; also SGD inner product and Adam cosine);
- naive: batch size 1, one backward pass per sample, the gradient as one explicit vector, explicit
  preconditioning and dot product (on `--naive-samples`);
- training: batched forward + backward of the LoRA loss, no optimiser step;
- anchor: the one-off mean anchor gradient (16 samples), reported separately;
- peak RSS of the fast path at N and 4N samples, each in its own subprocess (ru_maxrss).
The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from fedcurate.common.dynamics.checkpoints import Checkpoint, lora_parameters
from fedcurate.common.dynamics.clues import ScoreOptions, anchor_gradients, clues_scores
from fedcurate.common.dynamics.gradients import lora_layers, response_logits, token_nll
from fedcurate.common.dynamics.naive import flat_gradient, precondition
from fedcurate.common.dynamics.scoring import DynamicsModel, EncodedSet
from fedcurate.common.models.templates import IGNORE_INDEX, Encoded, collate

logger = logging.getLogger(__name__)

VOCAB, WIDTH, LAYERS, SEQ, PROMPT = 32000, 256, 4, 128, 64


def build(device: str, seed: int = 0) -> tuple[DynamicsModel, Checkpoint]:
    """The benchmark model with LoRA, and a synthetic checkpoint of it."""
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=SEQ,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                                target_modules=["q_proj", "v_proj"],
                                                                task_type=TaskType.CAUSAL_LM))
    model.to(device).eval()
    with torch.no_grad():
        for name, p in lora_parameters(model).items():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)  # peft starts B at zero, which would zero A's gradient
    adapter = {n: p.detach().cpu().clone() for n, p in lora_parameters(model).items()}
    ckpt = Checkpoint(step=1, lr_mean=1e-4, adapter=adapter,
                      exp_avg={n: torch.randn_like(t) * 1e-3 for n, t in adapter.items()},
                      exp_avg_sq={n: torch.rand_like(t) * 1e-6 for n, t in adapter.items()})
    return DynamicsModel(model, SimpleNamespace(pad_token_id=0), "plain", SEQ, batch_size=8), ckpt


def random_set(n: int, seed: int, prefix: str) -> EncodedSet:
    """`n` sequences of SEQ random token ids; loss on the last SEQ - PROMPT."""
    gen = torch.Generator().manual_seed(seed)
    items: list[Encoded | None] = []
    for _ in range(n):
        ids = torch.randint(3, VOCAB, (SEQ,), generator=gen).tolist()
        items.append(Encoded(ids, [IGNORE_INDEX] * PROMPT + ids[PROMPT:], PROMPT, response_len=SEQ - PROMPT))
    return EncodedSet(items, [f"{prefix}{i:06d}" for i in range(n)])


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2)


def time_fast(dm: DynamicsModel, ckpt: Checkpoint, data: EncodedSet, options: ScoreOptions) -> tuple[float, float]:
    """(samples/s of clues_scores, seconds of the anchor gradient), after a warm-up batch."""
    t0 = time.perf_counter()
    grads = anchor_gradients(dm, random_set(16, 1, "a"), [ckpt], options.modules)
    anchor_s = time.perf_counter() - t0
    clues_scores(dm, EncodedSet(data.items[:dm.batch_size], data.keys[:dm.batch_size]), [ckpt], grads, options)
    t0 = time.perf_counter()
    clues_scores(dm, data, [ckpt], grads, options)
    return _rate(len(data), time.perf_counter() - t0), round(anchor_s, 2)


def time_naive(dm: DynamicsModel, ckpt: Checkpoint, data: EncodedSet) -> float:
    """Samples/s of the batch-size-1 loop with explicit vectors (anchor gradient excluded)."""
    names = [layer.name for layer in lora_layers(dm.model)]
    gbar = flat_gradient(dm, data.items[0], names)  # stands in for the anchor mean: same cost profile
    m = torch.cat([ckpt.exp_avg[n].flatten() for n in names]).to(gbar.device)
    v = torch.cat([ckpt.exp_avg_sq[n].flatten() for n in names]).to(gbar.device)
    t0 = time.perf_counter()
    for enc in data.items:
        g = precondition(flat_gradient(dm, enc, names), m, v, ckpt.betas, ckpt.eps)
        float(g @ gbar)
    return _rate(len(data), time.perf_counter() - t0)


def time_training(dm: DynamicsModel, data: EncodedSet) -> float:
    """Samples/s of batched forward + backward of the LoRA loss (no optimiser step), after a warm-up."""
    device = next(dm.model.parameters()).device

    def step(items: list[Encoded]) -> None:
        batch = {k: v.to(device) for k, v in collate(items, dm.pad_id).items()}
        nll, mask = token_nll(*response_logits(dm.model, batch))  # the same forward as the LoRA trainer
        (nll.sum() / mask.sum()).backward()
        dm.model.zero_grad(set_to_none=True)

    items = [e for e in data.items if e is not None]
    step(items[:dm.batch_size])
    t0 = time.perf_counter()
    for start in range(0, len(items), dm.batch_size):
        step(items[start:start + dm.batch_size])
    return _rate(len(items), time.perf_counter() - t0)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def work_memory(n: int, batch_size: int, device: str) -> dict[str, Any]:
    """Fast path on n samples in this process: samples/s and peak RSS."""
    dm, ckpt = build(device)
    dm = DynamicsModel(dm.model, dm.tokenizer, dm.template, dm.max_length, batch_size)
    rss_model = _peak_rss_mib()
    rate, _ = time_fast(dm, ckpt, random_set(n, 2, "s"), ScoreOptions())
    return {"n": n, "samples_per_s": rate, "peak_rss_mib": round(_peak_rss_mib(), 1),
            "rss_after_build_mib": round(rss_model, 1)}


def _subprocess(args: argparse.Namespace, n: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "fedcurate.simulations.bench_dynamics", "--worker-memory", str(n),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark. Example: fedcurate bench dynamics --samples 64 --naive-samples 16"""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--samples", type=int, default=64, help="N: samples scored by the fast path")
    parser.add_argument("--naive-samples", type=int, default=16, help="samples of the (slow) naive loop")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--skip-memory", action="store_true", help="skip the N / 4N subprocess runs")
    parser.add_argument("--worker-memory", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.worker_memory:
        print(json.dumps(work_memory(args.worker_memory, args.batch_size, args.device)))
        return 0
    dm, ckpt = build(args.device)
    dm = DynamicsModel(dm.model, dm.tokenizer, dm.template, dm.max_length, args.batch_size)
    data = random_set(args.samples, 2, "s")
    result: dict[str, Any] = {"device": args.device, "threads": args.threads, "batch_size": args.batch_size,
                              "samples": args.samples, "seq_len": SEQ}
    result["training_samples_per_s"] = time_training(dm, data)
    for label, options in (("fast", ScoreOptions()), ("fast_sgd_inner", ScoreOptions("sgd", "inner")),
                           ("fast_adam_cosine", ScoreOptions("adam", "cosine"))):
        result[f"{label}_samples_per_s"], result["anchor_gradient_s"] = time_fast(dm, ckpt, data, options)
    result["naive_samples_per_s"] = time_naive(dm, ckpt, EncodedSet(data.items[:args.naive_samples],
                                                                     data.keys[:args.naive_samples]))
    result["fast_over_training"] = round(result["fast_samples_per_s"] / result["training_samples_per_s"], 3)
    result["fast_over_naive"] = round(result["fast_samples_per_s"] / result["naive_samples_per_s"], 3)
    if not args.skip_memory:
        small, large = _subprocess(args, args.samples), _subprocess(args, 4 * args.samples)
        result["peak_rss_mib"] = {str(small["n"]): small["peak_rss_mib"], str(large["n"]): large["peak_rss_mib"]}
        result["peak_rss_ratio_4n_over_n"] = round(large["peak_rss_mib"] / small["peak_rss_mib"], 3)
    for key, value in result.items():
        logger.info("%s: %s", key, value)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
