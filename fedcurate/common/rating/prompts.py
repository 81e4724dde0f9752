"""Rating prompts: the shipped judge templates, SelectIT's rating prompts, and user template files.

    t = load_template("ds2")                  # or "alpagasus", "fineweb-edu", "selectit", or a file path
    prompt = t.render(sample)                 # fills {instruction}, {input}, {response}
    rating = t.parse(completion_text)         # Rating: score in t's range, or NaN with its reason
    prompts = selectit_prompts(5, levels=5)   # 5 paraphrased rating prompts asking for a score 1..5

A placeholder is a brace-enclosed word: `{instruction}`, `{input}` (empty when the sample has none)
and `{response}`; every other character, JSON braces included, is literal text. A user template file is
plain text; it must contain `{response}`, and any other `{word}` is an error naming the file. Optional
leading `#!` lines set how the answer is read (defaults shown):

    #! scale: 0-5          the valid score range (a score outside it is a failure, never clipped)
    #! parser: score       `score` (free text, see parsing.py) or `ds2` (JSON, compressed to 0-5)
    #! pick: last          which labelled score counts when the judge writes several: `first`/`last`

The prompt texts were written for this project; they paraphrase the published rating criteria.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.base import Generation, Rating
from fedcurate.common.rating.parsing import from_generation, parse_ds2, parse_score

PLACEHOLDERS = ("instruction", "input", "response")
PARSERS = ("score", "ds2")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(ValueError):
    """A prompt template (shipped name or user file) is unusable; the message names it."""


@dataclass(frozen=True)
class PromptTemplate:
    """A judge prompt with its parser and the valid score range."""

    name: str
    text: str
    low: float = 0.0
    high: float = 5.0
    parser: str = "score"  # one of PARSERS
    pick: str = "last"  # which labelled score counts: "first" or "last"

    def render(self, sample: Sample) -> str:
        """The prompt for `sample` (one pass: placeholder-like text inside the sample stays as is)."""
        values = {"instruction": sample.instruction, "input": sample.input, "response": sample.response}
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.text)

    def parse(self, text: str) -> Rating:
        """The judge's completion as a Rating in [low, high], or NaN with its reason."""
        if self.parser == "ds2":
            return parse_ds2(text)
        return parse_score(text, self.low, self.high, pick=self.pick)

    def parse_generation(self, gen: Generation) -> Rating:
        if gen.error:
            return from_generation(gen, self.low, self.high)
        return self.parse(gen.text)


DS2_TEXT = """You are reviewing one example from a dataset used to fine-tune an AI assistant. Judge it on three criteria:
- Rarity: how unusual or original the task is, compared with everyday requests.
- Complexity: how much reasoning, knowledge or skill the task and its answer call for.
- Informativeness: how much correct and useful content the response delivers.
Mark each criterion with a whole number from 1 to 10, where 10 is the highest. Then give an overall rating from 1 to 10 that sums up the example's value as training data. Spread your marks over the whole scale instead of settling on one favourite value; when two examples look alike, let the small differences between them show in the numbers.

## Example
### Instruction
{instruction}
{input}
### Response
{response}

Reply with a single JSON object and nothing else, shaped like this:
{"Rarity": <1-10>, "Complexity": <1-10>, "Informativeness": <1-10>, "Overall rating": <1-10>}
"""

ALPAGASUS_TEXT = """You are grading an AI assistant. Read the instruction and the assistant's response, and judge how accurate and how helpful the response is. Use a scale from 0 to 5: 0 means the response is wrong, off-topic or useless, and 5 means it is fully correct, complete and genuinely helpful.

[Instruction]
{instruction}
{input}

[Response]
{response}

Begin your reply with one line of the form "Score: N", where N is a whole number from 0 to 5. After that line, justify the score in one or two sentences.
"""

FINEWEB_EDU_TEXT = """Here is an instruction together with a response. Estimate how much the pair would be worth as study material for learners between primary school and undergraduate level. Count points as follows; they add up, so the total lies between 0 and 5:
- 1 point if the response touches on something a learner could pick up, even when it is mixed with chatter, advertising or other off-topic material.
- 1 more point if it deals with subject matter that schools teach, but only partially, loosely ordered, or in a hard-to-follow way.
- 1 more point if a teacher could use it as is: it explains the central ideas clearly and in a sensible order, as an introductory text would.
- 1 more point if it is strongly suited to school learning: well organised, with clear reasoning or worked examples and hardly any distraction.
- 1 more point if it is exceptional teaching material: thorough, accurate, insightful and easy to follow for its intended level.
If none of these holds, the total is 0.

Instruction:
{instruction}
{input}

Response:
{response}

Explain your count briefly (100 words at most). Finish with a last line of the form "Educational score: N", where N is the total number of points.
"""

# SelectIT rating instructions: paraphrases of one request (rate the response from 1 to {levels}).
# The sentence level uses the first `selectit_prompts` of them, in this order.
SELECTIT_INSTRUCTIONS = (
    "Judge how well the response below carries out the instruction. Reply with one whole number from 1 "
    "(very poor) to {levels} (excellent).",
    "Read the instruction and the answer that follows it, then grade the answer's quality with a single "
    "integer between 1 and {levels}; {levels} is the best grade.",
    "You are checking training data for an assistant. Give the reply below one quality mark from 1 to "
    "{levels}: higher marks mean a more accurate, helpful and complete reply.",
    "How correct and useful is this response to its instruction? Answer only with a number on a scale "
    "of 1 to {levels} (1 = worst, {levels} = best).",
    "Decide whether the response answers the instruction correctly, clearly and fully, and express "
    "your verdict as one integer score from 1 to {levels}.",
    "Taking accuracy, relevance and level of detail into account, rate the following response from 1 "
    "to {levels}. Write the rating only.",
    "Score the answer given to the instruction below for overall quality, using whole numbers from 1 "
    "(unacceptable) up to {levels} (outstanding).",
    "An instruction and a candidate response follow. Assign the response a rating between 1 and "
    "{levels}, where a larger number means a better response.",
)
SELECTIT_BODY = "{line}\n\nInstruction: {instruction}\n{input}\nResponse: {response}\n\nRating (1-{levels}):\n"

SHIPPED: dict[str, PromptTemplate] = {
    "ds2": PromptTemplate("ds2", DS2_TEXT, 0.0, 5.0, parser="ds2"),
    "alpagasus": PromptTemplate("alpagasus", ALPAGASUS_TEXT, 0.0, 5.0, pick="first"),
    "fineweb-edu": PromptTemplate("fineweb-edu", FINEWEB_EDU_TEXT, 0.0, 5.0),
}


def selectit_prompt(line: str, levels: int, name: str = "selectit") -> PromptTemplate:
    """One SelectIT rating prompt: the rating `line`, the sample, and a last line the digit follows."""
    body = SELECTIT_BODY.replace("{line}", line.replace("{levels}", str(levels)))
    return PromptTemplate(name, body.replace("{levels}", str(levels)), 1.0, float(levels))


def selectit_prompts(n: int, levels: int, path: str | Path | None = None) -> list[PromptTemplate]:
    """The first `n` SelectIT rating prompts for scores 1..`levels` (shipped, or one per line of `path`)."""
    lines = list(SELECTIT_INSTRUCTIONS) if path is None else _read_lines(Path(path))
    if n > len(lines):
        where = "shipped" if path is None else f"in {path}"
        raise TemplateError(f"selectit_prompts = {n}, but only {len(lines)} SelectIT rating prompts are {where}")
    return [selectit_prompt(line, levels, f"selectit-{i + 1}") for i, line in enumerate(lines[:n])]


def load_template(name_or_path: str) -> PromptTemplate:
    """A shipped template by name (`ds2`, `alpagasus`, `fineweb-edu`, `selectit`) or a user file."""
    if name_or_path in SHIPPED:
        return SHIPPED[name_or_path]
    if name_or_path == "selectit":
        return selectit_prompt(SELECTIT_INSTRUCTIONS[0], 5)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise TemplateError(f"prompt {name_or_path!r}: neither a shipped template "
                            f"({', '.join([*SHIPPED, 'selectit'])}) nor an existing file")
    return parse_template_file(path)


def parse_template_file(path: Path) -> PromptTemplate:
    """Read and validate a user template file (see the module docstring)."""
    text = path.read_text(encoding="utf-8")
    settings = {"scale": "0-5", "parser": "score", "pick": "last"}
    body = text.splitlines(keepends=True)
    while body and body[0].startswith("#!"):
        key, sep, value = body.pop(0)[2:].partition(":")
        key = key.strip()
        if not sep or key not in settings:
            raise TemplateError(f"{path}: bad header line {key!r}; allowed: "
                                + ", ".join(f"'#! {k}: ...'" for k in settings))
        settings[key] = value.strip()
    text = "".join(body)
    check_placeholders(text, str(path))
    low, high = _scale(settings["scale"], path)
    if settings["parser"] not in PARSERS:
        raise TemplateError(f"{path}: parser {settings['parser']!r}; allowed: {', '.join(PARSERS)}")
    if settings["pick"] not in ("first", "last"):
        raise TemplateError(f"{path}: pick {settings['pick']!r}; allowed: first, last")
    return PromptTemplate(path.stem, text, low, high, parser=settings["parser"], pick=settings["pick"])


def check_placeholders(text: str, source: str) -> None:
    """Raise TemplateError if `text` has an unknown placeholder or lacks `{response}`."""
    found = [m.group(1) for m in _PLACEHOLDER.finditer(text)]
    unknown = sorted({p for p in found if p not in PLACEHOLDERS})
    if unknown:
        raise TemplateError(f"{source}: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                            f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    if "response" not in found:
        raise TemplateError(f"{source}: the template has no {{response}} placeholder, so the judge "
                            "would never see the answer it rates")


def _scale(value: str, path: Path) -> tuple[float, float]:
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*", value)
    if not match or float(match.group(1)) >= float(match.group(2)):
        raise TemplateError(f"{path}: scale {value!r}; expected 'LOW-HIGH' with LOW < HIGH, e.g. '1-10'")
    return float(match.group(1)), float(match.group(2))


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise TemplateError(f"SelectIT prompt file {path} does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    for i, line in enumerate(lines, 1):
        bad = sorted({m.group(1) for m in _PLACEHOLDER.finditer(line)} - {"levels"})
        if bad:
            raise TemplateError(f"{path}:{i}: unknown placeholder(s) {bad}; a SelectIT line may only use {{levels}}")
    if not lines:
        raise TemplateError(f"SelectIT prompt file {path} has no rating prompt (one per non-empty line)")
    return lines
