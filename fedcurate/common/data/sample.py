"""The `Sample` record every stage works on, and the errors raised for bad input rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One instruction-tuning example.

    `instruction` is the task, `input` optional extra context, `response` the answer to learn.
    `source` names where it came from (file or dataset); `metadata` carries anything else
    (e.g. the synthetic generator's ground-truth `clean` flag or a chat's earlier turns).
    """

    id: str
    instruction: str
    response: str
    input: str = ""
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        """Instruction and input joined, as a rater or embedder sees the request."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Sample:
        return cls(
            id=str(row["id"]),
            instruction=row["instruction"],
            response=row["response"],
            input=row.get("input", "") or "",
            source=row.get("source", "") or "",
            metadata=dict(row.get("metadata") or {}),
        )


@dataclass(frozen=True)
class Reject:
    """A rejected input row: where it was, which field, and why."""

    file: str
    line: int  # 1-based line (JSONL/CSV) or record index + 1 (JSON, Parquet, datasets)
    field: str  # "" when the row as a whole is bad (e.g. malformed JSON)
    reason: str
    raw: str = ""  # the offending row, truncated, so a user can find and fix it

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f": field {self.field!r}" if self.field else "")
        return f"{where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DataError(ValueError):
    """Bad input data. Carries every reject found, so the user can fix all rows in one pass."""

    def __init__(self, rejects: list[Reject]) -> None:
        self.rejects = rejects
        shown = "\n".join(f"  {r}" for r in rejects[:50])
        more = f"\n  ... and {len(rejects) - 50} more" if len(rejects) > 50 else ""
        hint = "\n(set data.on-error = \"skip\" to use the good rows and write the bad ones to rejects.jsonl)"
        super().__init__(f"{len(rejects)} bad input row(s):\n{shown}{more}{hint}")
