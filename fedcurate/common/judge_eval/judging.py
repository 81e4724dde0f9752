"""Asking the judge and scoring its verdicts: 0/1 correctness against the reference, or a pairwise win rate.

    verdicts = ask_judge(backend, prompts, CANDIDATES["correct"], parse_correct, method="auto")
    result = judge_correctness(samples, answers, backend)                  # result.accuracy
    result = judge_pairwise(samples, answers, baseline_answers, backend)   # result.win_rate
    result.summary(), result.records                                       # figures; one dict per sample

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
per-sample failure with its reason, never a 0.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedcurate.common.data.sample import Sample
from fedcurate.common.judge_eval.prompts import (
    CANDIDATES,
    CORRECT_TEXT,
    METHODS,
    PAIRWISE_TEXT,
    Verdict,
    check_choice,
    parse_choice,
    parse_correct,
    render,
)
from fedcurate.common.rating.base import Backend, TokenProbs
from fedcurate.common.rating.raters import reason_category

logger = logging.getLogger(__name__)


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


def ask_judge(backend: Backend, prompts: Sequence[str], candidates: Sequence[str], parse: Callable[[str], Verdict],
              *, method: str = "auto", max_new_tokens: int = 16, temperature: float = 0.0) -> list[Verdict]:
    """One Verdict per prompt, same order: from candidate probabilities, generation, or both (see the module)."""
    check_choice("method", method, METHODS)
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


def _check_lengths(samples: Sequence[Sample], answers: Sequence[str], what: str) -> None:
    if len(answers) != len(samples):
        raise ValueError(f"{len(answers)} {what} for {len(samples)} samples")
