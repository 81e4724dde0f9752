"""Row layouts ("schemas"): one small adapter per layout turns a raw row into `Sample` fields.

    SCHEMAS["alpaca"]({"instruction": "Add", "input": "2+2", "output": "4"})   # -> Extracted(...)
    row_to_sample(row, "question-answer", columns={}, default_id="train:3", file_name="train.jsonl")

Layouts: `native` (what `write_samples` writes: id/instruction/input/response/source/metadata),
`alpaca` (instruction, optional input, output), `messages` (Tulu `messages` with role/content, or ShareGPT
`conversations` with from/value), `question-answer` (GSM8K), `prompt-completion`, and `columns` (only the
user's mapping). A user column mapping (Sample field -> column name) applies on top of any layout.
Every column a layout does not consume lands in `Sample.metadata`. Bad rows raise `RowError(field, reason)`
where `field` is the column name in the file, so the user knows what to fix. Names and values must be what strict
UTF-8 JSON can carry (`check_values`): no lone surrogate (a `\\udXXX` escape), no NaN/Infinity, at most
MAX_DEPTH levels of nesting, so whatever loads can be written back by `write_samples`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedcurate.common.data.sample import Sample

MAPPABLE = ("id", "instruction", "input", "response")  # Sample fields a user mapping may target
REQUIRED = ("instruction", "response")
USER_ROLES = {"user", "human"}
ASSISTANT_ROLES = {"assistant", "gpt", "chatgpt", "model"}
MAX_DEPTH = 100  # nesting levels a column value may have: deeper ones overflow the recursive JSON/asdict writers
_SURROGATE = re.compile("[\ud800-\udfff]")  # unpaired after json decoding: not encodable as UTF-8


class RowError(ValueError):
    """One bad row: the column (`field`) at fault and a reason a user can act on."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


@dataclass
class Extracted:
    """What an adapter found: raw values per Sample field, the column each came from, consumed columns."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # Sample field -> column name (for errors)
    consumed: set[str] = field(default_factory=set)
    metadata: dict[str, Any] = field(default_factory=dict)


def _pick(row: Mapping[str, Any], mapping: Mapping[str, str]) -> Extracted:
    """Take Sample fields from flat columns; an absent column stays absent (checked later)."""
    out = Extracted(origin=dict(mapping), consumed=set(mapping.values()))
    for sample_field, column in mapping.items():
        if column in row:
            out.values[sample_field] = row[column]
    return out


def native(row: Mapping[str, Any]) -> Extracted:
    """The layout `write_samples` writes; `metadata` is merged back, `source` kept."""
    out = _pick(row, {"id": "id", "instruction": "instruction", "input": "input", "response": "response"})
    out.consumed |= {"source", "metadata"}
    src, meta = row.get("source"), row.get("metadata")
    if src is not None and not isinstance(src, str):
        raise RowError("source", f"wrong type: expected a string, got {_describe(src)}")
    if src:
        out.values["source"] = src
    if meta is not None and not isinstance(meta, dict):
        raise RowError("metadata", f"wrong type: expected an object, got {_describe(meta)}")
    out.metadata.update(meta or {})
    return out


def alpaca(row: Mapping[str, Any]) -> Extracted:
    """Stanford Alpaca: instruction, optional input, output."""
    return _pick(row, {"id": "id", "instruction": "instruction", "input": "input", "response": "output"})


def question_answer(row: Mapping[str, Any]) -> Extracted:
    """GSM8K-style question/answer."""
    return _pick(row, {"id": "id", "instruction": "question", "response": "answer"})


def prompt_completion(row: Mapping[str, Any]) -> Extracted:
    """prompt/completion pairs."""
    return _pick(row, {"id": "id", "instruction": "prompt", "response": "completion"})


def columns_only(row: Mapping[str, Any]) -> Extracted:
    """Only the user's mapping (applied by `row_to_sample`); the id still defaults to an `id` column."""
    return _pick(row, {"id": "id"})


def messages(row: Mapping[str, Any]) -> Extracted:
    """A chat (Tulu `messages` role/content, or ShareGPT `conversations` from/value).

    instruction = the first user turn; response = the first assistant reply after it; the first system
    turn before the user goes to metadata["system"]; every other turn, in order, to metadata["turns"].
    """
    column = "messages" if "messages" in row else "conversations"
    role_key, text_key = ("role", "content") if column == "messages" else ("from", "value")
    turns = _chat_turns(row.get(column), column, role_key, text_key)
    user = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
    if user is None:
        raise RowError(column, "chat has no user turn")
    reply = next((i for i in range(user + 1, len(turns)) if turns[i][0] == "assistant"), None)
    if reply is None:
        raise RowError(column, f"chat has no assistant reply after the first user turn (turn {user + 1})")
    system = next((i for i in range(user) if turns[i][0] == "system"), None)
    out = Extracted(values={"instruction": turns[user][1], "response": turns[reply][1]},
                    origin={"id": "id", "instruction": column, "response": column}, consumed={column, "id"})
    if "id" in row:
        out.values["id"] = row["id"]
    if system is not None:
        out.metadata["system"] = turns[system][1]
    rest = [{"role": r, "content": t} for i, (r, t) in enumerate(turns) if i not in (user, reply, system)]
    if rest:
        out.metadata["turns"] = rest
    return out


def _chat_turns(chat: Any, column: str, role_key: str, text_key: str) -> list[tuple[str, str]]:
    """Validate a chat list and normalise roles to user/assistant/system (others kept as given)."""
    if not isinstance(chat, list):
        raise RowError(column, f"wrong type: expected a list of turns, got {_describe(chat)}")
    turns = []
    for i, turn in enumerate(chat, 1):
        if not isinstance(turn, dict):
            raise RowError(column, f"turn {i} is not an object (got {type(turn).__name__})")
        role, text = turn.get(role_key), turn.get(text_key)
        if not isinstance(role, str):
            raise RowError(column, f"turn {i}: {role_key!r} must be a string, got {_describe(role)}")
        if not isinstance(text, str):
            raise RowError(column, f"turn {i}: {text_key!r} must be a string, got {_describe(text)}")
        role = "user" if role in USER_ROLES else "assistant" if role in ASSISTANT_ROLES else role
        turns.append((role, text))
    return turns


Adapter = Callable[[Mapping[str, Any]], Extracted]
SCHEMAS: dict[str, Adapter] = {
    "native": native,
    "alpaca": alpaca,
    "messages": messages,
    "question-answer": question_answer,
    "prompt-completion": prompt_completion,
    "columns": columns_only,
}
# Detection order: the keys that identify each layout (any one key set suffices).
SIGNATURES: dict[str, tuple[frozenset[str], ...]] = {
    "native": (frozenset({"instruction", "response"}),),
    "alpaca": (frozenset({"instruction", "output"}),),
    "messages": (frozenset({"messages"}), frozenset({"conversations"})),
    "question-answer": (frozenset({"question", "answer"}),),
    "prompt-completion": (frozenset({"prompt", "completion"}),),
}
_FLAT_COLUMNS = {"native": ("instruction", "response"), "alpaca": ("instruction", "output"),
                 "question-answer": ("question", "answer"), "prompt-completion": ("prompt", "completion")}


def validate_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Check a user mapping (Sample field -> column name); every problem is named in one error."""
    problems = []
    for key, value in (columns or {}).items():
        if key not in MAPPABLE:
            problems.append(f"columns: {key!r} is not a Sample field; allowed: {', '.join(MAPPABLE)}")
        elif not isinstance(value, str) or not value:
            problems.append(f"columns.{key} = {value!r}: expected a non-empty column name")
    if problems:
        raise ValueError("; ".join(problems))
    return dict(columns or {})


def detect_schema(keys: Collection[str], columns: Mapping[str, str]) -> str | None:
    """The layout a row's keys match (after the user mapping), or None when nothing fits."""
    keys = set(keys)
    for name, signatures in SIGNATURES.items():
        if any(sig <= keys for sig in signatures):
            return name
    if all(columns.get(f) in keys for f in REQUIRED):
        return "columns"
    for name, (instruction, response) in _FLAT_COLUMNS.items():  # layout whose gap the mapping fills
        if {columns.get("instruction", instruction), columns.get("response", response)} <= keys:
            return name
    return None


def describe_schemas() -> str:
    """Human-readable list of layouts and their identifying keys (for 'could not detect' errors)."""
    parts = [f"{name} ({' or '.join('+'.join(sorted(s)) for s in sigs)})" for name, sigs in SIGNATURES.items()]
    return ", ".join(parts) + ", or columns (give data.columns with instruction and response)"


def row_to_sample(row: Mapping[str, Any], schema: str, columns: Mapping[str, str], *, default_id: str,
                  file_name: str, source: str | None = None) -> Sample:
    """Build a validated Sample from one row, or raise RowError naming the column at fault."""
    check_values(row)
    ex = SCHEMAS[schema](row)
    for sample_field, column in columns.items():  # the user mapping wins over the layout
        replaced = ex.origin.get(sample_field)
        ex.origin[sample_field] = column
        if replaced not in ex.origin.values():  # a column the mapping displaced is kept as metadata
            ex.consumed.discard(replaced)
        ex.consumed.add(column)
        ex.values.pop(sample_field, None)
        if column in row:
            ex.values[sample_field] = row[column]
    instruction = _text(ex, "instruction", required=True)
    response = _text(ex, "response", required=True)
    text_input = _text(ex, "input", required=False)
    metadata = {k: v for k, v in row.items() if k not in ex.consumed}
    metadata.update(ex.metadata)
    return Sample(id=_id(ex, default_id), instruction=instruction, response=response, input=text_input,
                  source=source or ex.values.get("source") or file_name, metadata=metadata)


def check_values(row: Mapping[str, Any]) -> None:
    """Raise RowError for the first column whose name or value strict UTF-8 JSON cannot carry (see the module
    docstring); values are walked iteratively, so a deeply nested one cannot overflow the stack here."""
    for column, value in row.items():
        problem = _value_problem(column) or _value_problem(value)
        if problem:
            what, why = problem
            raise RowError(str(column), f"{what} in {column!r}{why}")


def _value_problem(value: Any) -> tuple[str, str] | None:
    """(what is wrong, why it matters) for the first bad item in `value`, or None."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str) and (bad := _SURROGATE.search(item)):
            return f"invalid Unicode (lone surrogate U+{ord(bad.group()):04X})", " (the data must be UTF-8)"
        if isinstance(item, float) and not math.isfinite(item):
            return f"non-finite number {item}", " (strict JSON has no NaN/Infinity)"
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                return f"nesting deeper than {MAX_DEPTH} levels", ""
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _text(ex: Extracted, sample_field: str, *, required: bool) -> str:
    column = ex.origin.get(sample_field, sample_field)
    value = ex.values.get(sample_field)
    mapped = f" (mapped to {sample_field})" if column != sample_field else ""
    if value is None:
        if required:
            null = " (null)" if sample_field in ex.values else ""
            raise RowError(column, f"missing required field {column!r}{mapped}{null}")
        return ""
    if not isinstance(value, str):  # numbers are not silently turned into text
        raise RowError(column, f"wrong type: expected a string{mapped}, got {_describe(value)}")
    if required and not value.strip():
        raise RowError(column, f"empty or whitespace-only {sample_field}{mapped}")
    return value


def _id(ex: Extracted, default_id: str) -> str:
    value, column = ex.values.get("id"), ex.origin.get("id", "id")
    if value is None or (isinstance(value, str) and not value.strip()):
        return default_id
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RowError(column, f"wrong type: an id must be a string or an integer, got {_describe(value)}")
    return str(value)


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"{type(value).__name__} {text[:60] + ('...' if len(text) > 60 else '')}"
