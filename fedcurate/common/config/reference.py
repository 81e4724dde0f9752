"""The configuration reference: one Markdown table per section, generated from the schema.

    print(reference_markdown())             # what README.md embeds
    update_readme("README.md")              # `make docs`, i.e. `python -m fedcurate.common.config README.md`

Each row shows the key, its default (as TOML), the allowed values or bounds, and the field's help text.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fedcurate.common.config.schema import _dataclass_item, _hints, sections, toml_key
from fedcurate.common.config.toml_writer import _toml_value


def reference_markdown() -> str:
    """The configuration reference (one table per section), as embedded in README.md."""
    out: list[str] = []
    tables = [(sec, cls) for sec, cls in sections().items()]
    for sec, cls in sections().items():
        tables += [(f"{sec}.{toml_key(f.name)}", item) for f in dataclasses.fields(cls)
                   if (item := _dataclass_item(_hints(cls)[f.name])) is not None]
    for sec, cls in tables:
        label = f"[[{sec}]]" if "." in sec else f"[{sec}]"
        out += [f"**{label}** {(cls.__doc__ or '').split('] ', 1)[-1].strip()}", "",
                "| key | default | allowed | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            meta = f.metadata
            allowed = " / ".join(f"`{c}`" for c in meta["choices"]) if meta.get("choices") else ""
            bounds = [f">= {meta['min']}" if meta.get("min") is not None else "",
                      f"<= {meta['max']}" if meta.get("max") is not None else ""]
            allowed = allowed or ", ".join(b for b in bounds if b)
            out.append(f"| `{toml_key(f.name)}` | `{_toml_value(default)}` | {allowed} | {meta['help']} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def update_readme(path: str | Path) -> None:
    """Replace the text between the README's config-reference markers with `reference_markdown()`."""
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    text = Path(path).read_text(encoding="utf-8")
    i, j = text.index(start) + len(start), text.index(end)
    Path(path).write_text(text[:i] + reference_markdown() + text[j:], encoding="utf-8")
