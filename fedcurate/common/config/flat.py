"""Flower's run-config bridge: a `Config` as flat `section.key` -> bool/int/float/str, and back.

    flat = to_flat(cfg)                     # what travels in a Flower run-config or ConfigRecord
    assert from_flat(flat) == cfg
    cfg = from_flat(context.run_config)     # validated like a TOML file; ConfigError names every problem

Lists are comma-joined (a JSON array when that would lose items), tables become `section.key.subkey`,
arrays of tables `section.key.<i>.subkey` plus `section.key` = their count.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from fedcurate.common.config.load import _from_raw, _show, _split_list
from fedcurate.common.config.schema import MAX_TABLES, Config, FlatValue, _dataclass_item, _hints, sections
from fedcurate.common.config.toml_writer import to_dict


def to_flat(cfg: Config) -> dict[str, FlatValue]:
    """Flower run-config form: `section.key` -> bool/int/float/str. Lists are comma-joined (a JSON array when
    that would lose items, see `_flat_list`), tables become `section.key.subkey`, arrays of tables
    `section.key.<i>.subkey` (plus `section.key` = count)."""
    flat: dict[str, FlatValue] = {}
    for sec, values in to_dict(cfg).items():
        for key, value in values.items():
            if _dataclass_item(_hints(sections()[sec])[key.replace("-", "_")]) is not None:
                flat[f"{sec}.{key}"] = len(value)
                for i, item in enumerate(value):
                    flat.update({f"{sec}.{key}.{i}.{k}": _flat_scalar(v) for k, v in item.items()})
            elif isinstance(value, dict):
                flat.update({f"{sec}.{key}.{sub}": v for sub, v in value.items()})
            else:
                flat[f"{sec}.{key}"] = _flat_scalar(value)
    return flat


def _flat_scalar(value: Any) -> FlatValue:
    return _flat_list(value) if isinstance(value, list) else value


def _flat_list(items: list[Any]) -> str:
    """`a,b` as a user writes it in a run-config; a JSON array when splitting that back would change the list
    (an item holding a comma, empty or with edge spaces, or text starting with `[`, which reads as JSON)."""
    parts = [str(v) for v in items]
    text = ",".join(parts)
    if text.startswith("[") or any(not p or "," in p or p != p.strip() for p in parts):
        return json.dumps(items)
    return text



def from_flat(flat: dict[str, Any], source: str = "<run-config>") -> Config:
    """Inverse of `to_flat` (also accepts a Flower `context.run_config`)."""
    raw: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for dotted, value in flat.items():
        sec, _, rest = dotted.partition(".")
        key, _, sub = rest.partition(".")
        cls = sections().get(sec)
        typ = _hints(cls).get(key.replace("-", "_")) if cls else None
        target = raw.setdefault(sec, {})
        item_t = _dataclass_item(typ)
        if item_t is not None:
            _unflatten_table(dotted, value, sub, item_t, target.setdefault(key, []), problems)
        elif typ is not None and typing.get_origin(typ) is dict:
            target.setdefault(key, {})[sub] = value
        else:
            target[rest] = _unflatten_value(value, typ)
    return _from_raw(raw, source, problems)


def _unflatten_table(dotted: str, value: Any, sub: str, item_t: type, items: list[dict[str, Any]],
                     problems: list[str]) -> None:
    """`section.key` = count, or `section.key.<i>.subkey` = value, of an array of tables into `items`."""
    if not sub:
        count = _table_index(value)
        if count is None:
            problems.append(f"{dotted} = {_show(value)}: expected the number of tables, 0 to {MAX_TABLES}")
        else:
            items.extend({} for _ in range(count - len(items)))
        return
    index_text, _, field_key = sub.partition(".")
    index = _table_index(index_text)
    if index is None or index >= MAX_TABLES:
        problems.append(f"{dotted}: {_show(index_text)} is not a table index (0 to {MAX_TABLES - 1})")
        return
    items.extend({} for _ in range(index + 1 - len(items)))
    items[index][field_key] = _unflatten_value(value, _hints(item_t).get(field_key.replace("-", "_")))


def _table_index(value: Any) -> int | None:
    """A count or index of an array of tables, 0..MAX_TABLES, given as an int or its decimal digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TABLES:
        return value
    return None


def _unflatten_value(value: Any, typ: Any) -> Any:
    """Split a comma-joined (or JSON) list back into items of the list's element type."""
    if typ is None or typing.get_origin(typ) is not list or not isinstance(value, str):
        return value
    items = _split_list(value)
    if typing.get_args(typ) == (float,):
        return [_maybe_float(v) for v in items]
    return items


def _maybe_float(item: Any) -> Any:
    if not isinstance(item, str):
        return item
    try:
        return float(item)
    except ValueError:
        return item  # left as a string: the validator names the bad value
