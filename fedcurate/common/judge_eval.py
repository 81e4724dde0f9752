"""LLM-judge evaluation of a fine-tuned model: 0/1 correctness against the reference, or pairwise win rate.

    fedcurate judge --model tiny --adapter runs/x/train/adapter --test test.jsonl \\
        --config configs/rating-tiny.toml --out runs/judge --mode pairwise

    answers = generate_answers("tiny", samples, cfg.model, adapter="runs/x/train/adapter", max_new_tokens=64)
    result = judge_correctness(samples, answers, backend)                  # result.accuracy
    result = judge_pairwise(samples, answers, baseline_answers, backend)   # result.win_rate
    result = run_judge(cfg, model="tiny", test_path="test.jsonl", out_dir="runs/judge")  # both steps + files

The model under test (a base model, plus an optional peft LoRA adapter) answers each test sample
greedily from its prompt in `model.template`. The judge is one `[[rating.raters]]` entry of the config
(the first, or the one named), built by the rating backends' own factory, so a local model, an
OpenAI-compatible endpoint and a vLLM server all work.

correct:  the judge sees question, reference and answer and replies 1 (correct) or 0 (as CLUES does);
          accuracy = mean verdict over the judged samples.
pairwise: the judge sees question, answer A and answer B and replies A or B. Every sample is judged in
          both orders (model as A, then model as B); the model wins a sample only when both orders pick
          it, loses when both pick the baseline, and ties otherwise (an order-dependent verdict is a tie),
          so a judge that always says "A" gives exactly 0.5. win_rate = (wins + ties / 2) / judged.

How the judge is asked (`method`): `probs` reads the probabilities of the candidate tokens ("1"/"0" or
"A"/"B") after the prompt (one prefill, deterministic); `generate` generates a reply and parses it;
`auto` uses probabilities and falls back to generation for the samples where they are unavailable
(e.g. the candidates are missing from an endpoint's top_logprobs, or are not single tokens after the
prompt under the judge's tokenizer; with `probs` the latter is an error). A reply that cannot be read is a
per-sample failure with its reason, never a 0. Outputs (atomic) under the output directory:
`judge-<mode>.jsonl` (one record per sample) and `judge-<mode>.json` (the summary), plus `config.toml`.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcurate.common import io
from fedcurate.common.config import Config, ConfigError, ModelConfig, RaterConfig, to_toml
from fedcurate.common.data.loaders import load_from_config
from fedcurate.common.data.sample import Sample
from fedcurate.common.evaluation import greedy_generate
from fedcurate.common.models.loading import apply_adapter, check_adapter_dir, load_model_and_tokenizer
from fedcurate.common.models.templates import encode_example
from fedcurate.common.rating.base import Backend, TokenProbs
from fedcurate.common.rating.prompts import TemplateError
from fedcurate.common.rating.raters import build_backend, reason_category
from fedcurate.common.rating.run import rating_cache_dir

logger = logging.getLogger(__name__)

MODES = ("correct", "pairwise")
METHODS = ("auto", "probs", "generate")
CANDIDATES = {"correct": ("1", "0"), "pairwise": ("A", "B")}
PLACEHOLDERS = {"correct": ("question", "reference", "answer"), "pairwise": ("question", "answer_a", "answer_b")}
OPTIONAL = {"correct": (), "pairwise": ("reference",)}

CORRECT_TEXT = """Check an answer against the reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to check:
{answer}

Is the answer correct, given the reference? Wording may differ; the substance must agree. \
Reply with 1 if it is correct and 0 if it is not.
"""

PAIRWISE_TEXT = """Two assistants answered the same question. Decide which answer is better: more correct, \
more helpful, clearer. Ignore their order and their length.

Question:
{question}

Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer is better? Reply with A or B only.
"""

DEFAULT_TEMPLATES = {"correct": CORRECT_TEXT, "pairwise": PAIRWISE_TEXT}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_OPEN = r"^[\s*_`\"'\[(]*"  # markup a reply may open with: "**1**", "[[A]]", "(B)"
_LEAD_DIGIT = re.compile(_OPEN + r"([01])(?!\d|[./]\d|[.)][ \t]+[A-Za-z])")
_LEAD_WORD = re.compile(_OPEN + r"(incorrect|correct|yes|no|true|false|wrong|right)\b", re.IGNORECASE)
_LABEL_DIGIT = re.compile(r"(?i:\b(?:verdict|score|judge?ment|correct(?:ness)?)\s*[:=]?)\s*[*_`\"'\[(]*([01])\b")
_WORDS = {"correct": 1, "yes": 1, "true": 1, "right": 1, "incorrect": 0, "no": 0, "false": 0, "wrong": 0}
_BRACKETS = re.compile(r"\[\[([ABC])\]\]")  # MT-bench's "[[A]]", "[[B]]", "[[C]]" (tie)
_LEAD_CHOICE = re.compile(_OPEN + r"(A|B)(?![A-Za-z0-9])(?![ \t]+(?!is\b)[a-z])")  # "A", "B.", not "A good"
_LEAD_TIE = re.compile(_OPEN + r"tie\b", re.IGNORECASE)
_LABEL_CHOICE = re.compile(r"(?i:\b(?:verdict|winner|better(?: answer| response)?|choice)(?:\s+is)?\s*[:=]?)"
                           r"\s*[*_`\"'\[(]*(?i:(?:answer|response|assistant)\s+)?(A|B)\b")


@dataclass(frozen=True)
class Verdict:
    """The judge's pick for one prompt: a candidate ("1"/"0", "A"/"B") or "tie", or the reason there is none."""

    choice: str | None
    method: str = ""  # "probs" or "generate"
    text: str = ""  # the judge's reply (generate)
    probs: dict[str, float] = field(default_factory=dict)  # candidate -> probability (probs)
    mass: float = math.nan  # unrenormalised probability of the candidates, when known
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"choice": self.choice, "method": self.method, "judge_text": self.text, "judge_probs": self.probs,
                "judge_mass": self.mass, "reason": self.reason}


@dataclass
class JudgeResult:
    """Figures of one judged evaluation; `records` holds one dict per sample (written as JSONL)."""

    mode: str
    n: int  # samples given
    n_failed: int  # samples without a usable verdict
    accuracy: float = math.nan  # correct: mean 0/1 verdict over the judged samples
    win_rate: float = math.nan  # pairwise: (wins + ties / 2) / judged
    wins: int = 0
    losses: int = 0
    ties: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)
    details: dict[str, float] = field(default_factory=dict)  # position bias, mean candidate mass, ...
    records: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Everything but the per-sample records."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "records"}
        out["n_judged"] = self.n - self.n_failed
        return out


def load_judge_template(path: str | Path | None, mode: str) -> str:
    """The built-in template of `mode`, or a user file checked for its placeholders (TemplateError)."""
    _check_choice("mode", mode, MODES)
    if path is None:
        return DEFAULT_TEMPLATES[mode]
    file = Path(path).expanduser()
    if not file.is_file():
        raise TemplateError(f"judge prompt {str(path)!r}: no such file")
    text = file.read_text(encoding="utf-8")
    found = {m.group(1) for m in _PLACEHOLDER.finditer(text)}
    allowed = PLACEHOLDERS[mode] + OPTIONAL[mode]
    unknown, missing = sorted(found - set(allowed)), [p for p in PLACEHOLDERS[mode] if p not in found]
    if unknown or missing:
        problems = ([f"missing {_braced(missing)}"] if missing else []) + \
            ([f"unknown {_braced(unknown)}"] if unknown else [])
        raise TemplateError(f"{file}: a {mode} judge prompt needs {_braced(PLACEHOLDERS[mode])}; "
                            f"{'; '.join(problems)} (allowed: {_braced(allowed)})")
    return text


def render(template: str, values: dict[str, str]) -> str:
    """Fill `{name}` placeholders in one pass (placeholder-like text inside the values stays as is)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def parse_correct(text: str) -> Verdict:
    """A 1/0 verdict from free text: a leading 1/0 (or correct/incorrect, yes/no), else the last "Verdict: N"."""
    if not text.strip():
        return Verdict(None, "generate", text, reason="empty output")
    match = _LEAD_DIGIT.match(text)
    if match:
        return Verdict(match.group(1), "generate", text)
    word = _LEAD_WORD.match(text)
    if word:
        return Verdict(str(_WORDS[word.group(1).lower()]), "generate", text)
    labelled = list(_LABEL_DIGIT.finditer(text))
    if labelled:
        return Verdict(labelled[-1].group(1), "generate", text)
    return Verdict(None, "generate", text, reason=f"unparseable verdict: expected 1 or 0, got {_short(text)!r}")


def parse_choice(text: str) -> Verdict:
    """A/B (or "tie") from free text: the last [[A]]/[[B]]/[[C]], a leading A/B/tie, else "Verdict: A"."""
    if not text.strip():
        return Verdict(None, "generate", text, reason="empty output")
    brackets = list(_BRACKETS.finditer(text))
    if brackets:
        pick = brackets[-1].group(1)
        return Verdict("tie" if pick == "C" else pick, "generate", text)
    lead = _LEAD_CHOICE.match(text)
    if lead:
        return Verdict(lead.group(1), "generate", text)
    if _LEAD_TIE.match(text):
        return Verdict("tie", "generate", text)
    labelled = list(_LABEL_CHOICE.finditer(text))
    if labelled:
        return Verdict(labelled[-1].group(1), "generate", text)
    return Verdict(None, "generate", text, reason=f"unparseable verdict: expected A or B, got {_short(text)!r}")


def ask_judge(backend: Backend, prompts: Sequence[str], candidates: Sequence[str], parse: Callable[[str], Verdict],
              *, method: str = "auto", max_new_tokens: int = 16, temperature: float = 0.0) -> list[Verdict]:
    """One Verdict per prompt, same order: from candidate probabilities, generation, or both (see the module)."""
    _check_choice("method", method, METHODS)
    verdicts: list[Verdict | None] = [None] * len(prompts)
    probs_errors = [""] * len(prompts)
    if method != "generate":
        for i, tp in enumerate(_candidate_probs(backend, prompts, candidates, strict=method == "probs")):
            if tp.error:
                probs_errors[i] = tp.error
                if method == "probs":
                    verdicts[i] = Verdict(None, "probs", reason=f"no candidate probabilities: {tp.error}")
            else:
                verdicts[i] = _from_probs(tp, candidates)
    todo = [i for i, v in enumerate(verdicts) if v is None]
    if todo:
        gens = backend.generate([prompts[i] for i in todo], max_new_tokens=max_new_tokens, temperature=temperature)
        if len(gens) != len(todo):
            raise RuntimeError(f"judge backend returned {len(gens)} replies for {len(todo)} prompts")
        for i, gen in zip(todo, gens, strict=True):
            v = parse(gen.text) if not gen.error else Verdict(None, "generate", reason=f"backend error: {gen.error}")
            if v.reason and probs_errors[i]:
                v = dataclasses.replace(v, reason=f"{v.reason} (candidate probabilities: {probs_errors[i]})")
            verdicts[i] = v
    return [v for v in verdicts if v is not None]


def judge_correctness(samples: Sequence[Sample], answers: Sequence[str], backend: Backend, *,
                      template: str = CORRECT_TEXT, method: str = "auto", max_new_tokens: int = 16,
                      temperature: float = 0.0) -> JudgeResult:
    """0/1 correctness of each answer against its sample's reference (`sample.response`)."""
    _check_lengths(samples, answers, "answers")
    prompts = [render(template, {"question": s.prompt_text, "reference": s.response, "answer": a})
               for s, a in zip(samples, answers, strict=True)]
    verdicts = ask_judge(backend, prompts, CANDIDATES["correct"], parse_correct, method=method,
                         max_new_tokens=max_new_tokens, temperature=temperature)
    records = []
    for s, a, v in zip(samples, answers, verdicts, strict=True):
        reason = v.reason or ("undecided: the candidates are equally likely" if v.choice == "tie" else "")
        records.append({"id": s.id, "question": s.prompt_text, "answer": a, "reference": s.response,
                        "verdict": None if reason else int(v.choice or 0), **v.to_json(), "reason": reason})
    scores = [r["verdict"] for r in records if r["verdict"] is not None]
    return JudgeResult("correct", len(records), len(records) - len(scores),
                       accuracy=sum(scores) / len(scores) if scores else math.nan,
                       failures_by_reason=_failures(records), details=_mass_details(verdicts), records=records)


def judge_pairwise(samples: Sequence[Sample], answers: Sequence[str], baseline_answers: Sequence[str],
                   backend: Backend, *, template: str = PAIRWISE_TEXT, method: str = "auto",
                   max_new_tokens: int = 16, temperature: float = 0.0) -> JudgeResult:
    """Win rate of `answers` against `baseline_answers`, each sample judged in both orders."""
    _check_lengths(samples, answers, "answers")
    _check_lengths(samples, baseline_answers, "baseline answers")

    def prompt(s: Sample, a: str, b: str) -> str:
        return render(template, {"question": s.prompt_text, "answer_a": a, "answer_b": b, "reference": s.response})

    rows = list(zip(samples, answers, baseline_answers, strict=True))
    prompts = [prompt(s, m, b) for s, m, b in rows] + [prompt(s, b, m) for s, m, b in rows]
    verdicts = ask_judge(backend, prompts, CANDIDATES["pairwise"], parse_choice, method=method,
                         max_new_tokens=max_new_tokens, temperature=temperature)
    first, second = verdicts[:len(rows)], verdicts[len(rows):]
    records = [_pair_record(s, m, b, v1, v2) for (s, m, b), v1, v2 in zip(rows, first, second, strict=True)]
    outcomes = Counter(r["verdict"] for r in records if r["verdict"] is not None)
    judged = sum(outcomes.values())
    wins, losses, ties = outcomes["win"], outcomes["loss"], outcomes["tie"]
    picks = [v.choice for v in verdicts if v.choice in ("A", "B")]
    consistent = sum(r["verdict"] in ("win", "loss") for r in records if r["verdict"] is not None)
    details = {"first_position_rate": picks.count("A") / len(picks) if picks else math.nan,
               "position_consistency": consistent / judged if judged else math.nan, **_mass_details(verdicts)}
    return JudgeResult("pairwise", len(records), len(records) - judged,
                       win_rate=(wins + ties / 2) / judged if judged else math.nan, wins=wins, losses=losses,
                       ties=ties, failures_by_reason=_failures(records), details=details, records=records)


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


def _candidate_probs(backend: Backend, prompts: Sequence[str], candidates: Sequence[str],
                     strict: bool) -> list[TokenProbs]:
    """`backend.candidate_probs`; a candidate that is not one token is fatal when strict, else means 'generate'."""
    try:
        out = backend.candidate_probs(prompts, candidates)
    except ValueError as err:  # e.g. CandidateError: the candidates are not single tokens after this prompt
        if strict:
            raise
        logger.warning("judge: no candidate probabilities (%s); generating replies instead", err)
        return [TokenProbs(error=str(err))] * len(prompts)
    if len(out) != len(prompts):
        raise RuntimeError(f"judge backend returned {len(out)} probabilities for {len(prompts)} prompts")
    return out


def _from_probs(tp: TokenProbs, candidates: Sequence[str]) -> Verdict:
    probs = dict(zip(candidates, tp.probs, strict=True))
    best = max(tp.probs)
    winners = [c for c, p in probs.items() if p == best]
    return Verdict(winners[0] if len(winners) == 1 else "tie", "probs", probs=probs, mass=tp.mass)


def _pair_record(s: Sample, model_answer: str, baseline_answer: str, first: Verdict, second: Verdict) -> dict[str, Any]:
    """Order 1 puts the model's answer at A, order 2 at B; the model wins a sample only if both orders pick it."""
    orders = [{"model_position": "A", **first.to_json()}, {"model_position": "B", **second.to_json()}]
    reasons = [f"order {i} (model as {pos}): {v.reason}" for i, (pos, v) in enumerate((("A", first), ("B", second)), 1)
               if v.reason]
    verdict = None
    if not reasons:
        model_picked = (first.choice == "A", second.choice == "B")
        baseline_picked = (first.choice == "B", second.choice == "A")
        verdict = "win" if all(model_picked) else "loss" if all(baseline_picked) else "tie"
    score = {"win": 1.0, "tie": 0.5, "loss": 0.0}.get(verdict or "", None)
    return {"id": s.id, "question": s.prompt_text, "answer": model_answer, "baseline_answer": baseline_answer,
            "reference": s.response, "verdict": verdict, "score": score, "orders": orders,
            "reason": "; ".join(reasons)}


def _failures(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Failed records counted by category (the reason's text before its first colon, order prefix dropped)."""
    counts: Counter[str] = Counter()
    for r in records:
        if r["reason"]:
            reason = re.sub(r"^order \d \(model as [AB]\): ", "", r["reason"])
            counts[reason_category(reason)] += 1
    return dict(counts)


def _mass_details(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """Share of verdicts read from probabilities, and the candidates' mean unrenormalised probability."""
    masses = [v.mass for v in verdicts if v.method == "probs" and not math.isnan(v.mass)]
    return {"probs_share": sum(v.method == "probs" for v in verdicts) / len(verdicts) if verdicts else math.nan,
            "mean_candidate_mass": sum(masses) / len(masses) if masses else math.nan}


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


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} = {value!r}: allowed values are {', '.join(allowed)}")


def _check_lengths(samples: Sequence[Sample], answers: Sequence[str], what: str) -> None:
    if len(answers) != len(samples):
        raise ValueError(f"{len(answers)} {what} for {len(samples)} samples")


def _braced(names: Sequence[str]) -> str:
    return ", ".join("{" + n + "}" for n in names)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
