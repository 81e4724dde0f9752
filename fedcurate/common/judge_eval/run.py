"""`fedcurate judge`: answer a test set with the model under test (a base model, plus an optional peft
LoRA adapter), have an LLM judge the answers, and write the outputs.

    answers = generate_answers("tiny", samples, cfg.model, adapter="runs/x/train/adapter", max_new_tokens=64)
    result = run_judge(cfg, model="tiny", test_path="test.jsonl", out_dir="runs/judge")  # both steps + files
    print(headline(result))                     # "accuracy 0.750 over 8 judged samples (0 failed)"

The model answers each test sample greedily from its prompt in `model.template`. The judge is one
`[[rating.raters]]` entry of the config (the first, or the one named: `judge_rater`), built by the rating
backends' own factory, so a local model, an OpenAI-compatible endpoint and a vLLM server all work. Outputs
(atomic) under the output directory: `judge-<mode>.jsonl` (one record per sample) and `judge-<mode>.json`
(the summary), plus `config.toml`.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcurate.common import io
from fedcurate.common.config import Config, ConfigError, ModelConfig, RaterConfig, to_toml
from fedcurate.common.data.loaders import load_from_config
from fedcurate.common.data.sample import Sample
from fedcurate.common.evaluation import greedy_generate
from fedcurate.common.judge_eval.judging import JudgeResult, judge_correctness, judge_pairwise
from fedcurate.common.judge_eval.prompts import METHODS, MODES, load_judge_template
from fedcurate.common.models.loading import apply_adapter, check_adapter_dir, load_model_and_tokenizer
from fedcurate.common.models.templates import encode_example
from fedcurate.common.rating.prompts import TemplateError
from fedcurate.common.rating.raters import build_backend
from fedcurate.common.rating.run import rating_cache_dir

logger = logging.getLogger(__name__)


def generate_answers(model_path: str, samples: Sequence[Sample], mcfg: ModelConfig, *,
                     adapter: str | Path | None = None, max_new_tokens: int = 256) -> list[str]:
    """Greedy answers of `model_path` (+ `adapter`) to each sample's prompt, stripped; the model is freed after."""
    model, tok = load_answerer(model_path, adapter, mcfg)
    try:
        return answer_with(model, tok, samples, template=mcfg.template, max_length=mcfg.max_length,
                           max_new_tokens=max_new_tokens, batch_size=mcfg.batch_size)
    finally:
        del model
        gc.collect()


def load_answerer(model_path: str, adapter: str | Path | None, mcfg: ModelConfig) -> tuple[Any, Any]:
    """A fresh (never shared) copy of the model, with the peft adapter merged in; the base model's tokenizer."""
    if adapter:
        check_adapter_dir(adapter)
    model, tok = load_model_and_tokenizer(model_path, dtype=mcfg.dtype, device=mcfg.device)
    if adapter:
        model = apply_adapter(model, adapter)
        model.eval()
    return model, tok


def answer_with(model: Any, tokenizer: Any, samples: Sequence[Sample], *, template: str, max_length: int,
                max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers of a loaded model: prompts encoded as in training, cut from the left to leave room."""
    if not 1 <= max_new_tokens <= max_length - 2:
        raise ValueError(f"max_new_tokens = {max_new_tokens}: must lie in [1, model.max-length - 2 = {max_length - 2}]")
    prompts = [encode_example(tokenizer, dataclasses.replace(s, response=""), template, max_length - max_new_tokens)
               for s in samples]
    ids = [e.input_ids[:e.prompt_len] for e in prompts]
    limit = getattr(model.config, "max_position_embeddings", None)
    budgets = [max(1, min(max_new_tokens, int(limit) - len(p))) if limit else max_new_tokens for p in ids]
    return [text.strip() for text in greedy_generate(model, tokenizer, ids, budgets, batch_size)]


def judge_rater(cfg: Config, name: str = "") -> RaterConfig:
    """The `[[rating.raters]]` entry named `name` (the first when empty): the judge's backend settings."""
    raters = cfg.rating.raters
    if not raters:
        raise ConfigError("rating.raters", ["no judge: add a [[rating.raters]] table (backend, model, url) for it"])
    if not name:
        return raters[0]
    for rcfg in raters:
        if rcfg.name == name:
            return rcfg
    raise ConfigError("rating.raters", [f"no rater named {name!r}; configured: {', '.join(r.name for r in raters)}"])


def run_judge(cfg: Config, *, model: str, test_path: str | Path | None, out_dir: str | Path, mode: str = "correct",
              adapter: str | Path | None = None, baseline: str | None = None,
              baseline_adapter: str | Path | None = None, judge: str = "", prompt: str | Path | None = None,
              method: str = "auto", max_new_tokens: int = 256) -> JudgeResult:
    """Answer the test set with the model under test (and the baseline), judge, and write the outputs.

    Pairwise without `baseline` compares against the base model `model` without the adapter. The test set
    is read with the [data] settings and cut to `evaluation.max-samples`; its responses are the references.
    """
    test_path = test_path or cfg.evaluation.test_path
    _check_args(mode, method, adapter, baseline, baseline_adapter, test_path)
    try:
        template = load_judge_template(prompt, mode)
    except TemplateError as err:
        raise ConfigError("--prompt", [str(err)]) from None
    rcfg = judge_rater(cfg, judge)
    out = Path(out_dir)
    io.write_text(out / "config.toml", to_toml(cfg))
    samples = load_from_config(cfg.data, test_path).samples[:cfg.evaluation.max_samples or None]
    t0 = time.perf_counter()
    answers = generate_answers(model, samples, cfg.model, adapter=adapter, max_new_tokens=max_new_tokens)
    others: list[str] = []
    if mode == "pairwise":
        base_path, base_adapter = (baseline, baseline_adapter) if baseline else (model, None)
        others = generate_answers(base_path, samples, cfg.model, adapter=base_adapter, max_new_tokens=max_new_tokens)
    answer_s = time.perf_counter() - t0
    backend = build_backend(rcfg, rating_cache_dir(cfg, out))
    try:
        kwargs = {"template": template, "method": method, "max_new_tokens": rcfg.max_new_tokens,
                  "temperature": rcfg.temperature}
        result = (judge_pairwise(samples, answers, others, backend, **kwargs) if mode == "pairwise"
                  else judge_correctness(samples, answers, backend, **kwargs))
    finally:
        getattr(backend, "close", lambda: None)()
    io.write_jsonl(out / f"judge-{mode}.jsonl", result.records)
    summary = {**result.summary(), "model": model, "adapter": str(adapter or ""),
               "baseline": (baseline or model) if mode == "pairwise" else "",
               "baseline_adapter": str(baseline_adapter or "") if mode == "pairwise" else "",
               "judge": {"name": rcfg.name, "backend": rcfg.backend, "model": rcfg.model}, "method": method,
               "prompt": str(prompt or "built-in"), "max_new_tokens": max_new_tokens,
               "timings_s": {"answer": round(answer_s, 3), "judge": round(time.perf_counter() - t0 - answer_s, 3)}}
    io.write_json(out / f"judge-{mode}.json", summary)
    logger.info("%s", headline(result))
    return result


def headline(result: JudgeResult) -> str:
    """One line for the console: the main figure, with the counts behind it."""
    judged = result.n - result.n_failed
    if result.mode == "pairwise":
        return (f"win rate {result.win_rate:.3f} over {judged} judged samples ({result.wins} wins, "
                f"{result.losses} losses, {result.ties} ties; {result.n_failed} failed)")
    return f"accuracy {result.accuracy:.3f} over {judged} judged samples ({result.n_failed} failed)"


def _check_args(mode: str, method: str, adapter: str | Path | None, baseline: str | None,
                baseline_adapter: str | Path | None, test_path: str | Path | None) -> None:
    problems = []
    if baseline_adapter and not baseline:
        problems.append("--baseline-adapter needs --baseline PATH (the adapter's base model)")
    if not test_path:
        problems.append("no test set: pass --test FILE or set evaluation.test-path")
    for name, value, allowed in (("--mode", mode, MODES), ("--method", method, METHODS)):
        if value not in allowed:
            problems.append(f"{name} = {value!r}: allowed values are {', '.join(allowed)}")
    if mode == "pairwise" and not baseline and not adapter:
        problems.append("--mode pairwise needs --baseline PATH (or --adapter, to compare against the base model)")
    if problems:
        raise ConfigError("fedcurate judge", problems)
