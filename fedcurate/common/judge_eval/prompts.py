"""The judge's prompts and how its replies are read: built-in templates, user templates checked for their
placeholders, and parsers that turn free text into a Verdict (or a reason there is none).

    template = load_judge_template(None, "correct")          # or a file with {question} {reference} {answer}
    prompt = render(template, {"question": q, "reference": ref, "answer": a})
    parse_correct("**1** -- the answer matches").choice      # "1"
    parse_choice("Verdict: [[B]]").choice                    # "B"; "[[C]]" -> "tie"
    parse_choice("Both are fine").reason                     # "unparseable verdict: expected A or B, got ..."

correct asks for 1 (correct) or 0, pairwise for A or B (`CANDIDATES`). `parse_correct` takes a leading 1/0
(or correct/incorrect, yes/no, true/false), else the last "Verdict: N"; `parse_choice` the last
[[A]]/[[B]]/[[C]] (MT-bench style), a leading A/B/tie, else the last "Verdict: A".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcurate.common.rating.prompts import TemplateError

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


def load_judge_template(path: str | Path | None, mode: str) -> str:
    """The built-in template of `mode`, or a user file checked for its placeholders (TemplateError)."""
    check_choice("mode", mode, MODES)
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


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """ValueError naming the allowed values when `value` (a mode, a method) is not one of them."""
    if value not in allowed:
        raise ValueError(f"{name} = {value!r}: allowed values are {', '.join(allowed)}")


def _braced(names: Sequence[str]) -> str:
    return ", ".join("{" + n + "}" for n in names)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
