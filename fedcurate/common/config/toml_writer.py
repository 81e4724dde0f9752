"""The TOML writer: a `Config` as nested {section: {kebab-key: value}} and as TOML text.

    (run_dir / "resolved.toml").write_text(to_toml(cfg))    # next to every run's outputs
    assert load_config(run_dir / "resolved.toml") == cfg
    to_dict(cfg)["selection"]["fraction"]                   # 0.5

Strings are TOML basic strings (control characters escaped), keys bare when TOML allows it, arrays of
tables (`[[rating.raters]]`) follow their section's plain keys.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from fedcurate.common.config.schema import Config, sections, toml_key


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Nested {section: {kebab-key: value}}, the shape of the TOML file."""
    return {sec: _plain(getattr(cfg, sec)) for sec in sections()}


def _plain(obj: Any) -> Any:
    """Dataclasses become {kebab-key: value}; the keys of a dict field (user column names) stay as they are."""
    if dataclasses.is_dataclass(obj):
        return {toml_key(f.name): _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML text (written next to every run's outputs)."""
    lines: list[str] = []
    for sec, values in to_dict(cfg).items():
        lines.append(f"[{sec}]")
        tables = {k: v for k, v in values.items() if _is_table_list(v)}
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if key not in tables]
        for key, items in tables.items():
            for item in items:
                lines += ["", f"[[{sec}.{key}]]"] + [f"{k} = {_toml_value(v)}" for k, v in item.items()]
        lines.append("")
    return "\n".join(lines)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


# TOML basic strings: the short escapes, \uXXXX for every other control character (U+0000-U+001F, U+007F)
_TOML_ESCAPES = {i: f"\\u{i:04x}" for i in [*range(0x20), 0x7F]} | {
    ord(c): e for c, e in {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"',
                           "\\": "\\\\"}.items()}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(text: str) -> str:
    return '"' + text.translate(_TOML_ESCAPES) + '"'


def _toml_key_text(key: str) -> str:
    """A bare key when TOML allows one, else a quoted key (`"a.b"`, `"my col"`, `""`)."""
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key_text(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)
