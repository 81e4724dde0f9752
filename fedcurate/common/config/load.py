"""Loading and validation: TOML file (or dict) -> a checked `Config`, every problem reported at once.

    cfg = load_config("configs/centralized.toml")          # raises ConfigError listing every problem
    cfg = load_config("x.toml", overrides={"selection.fraction": 0.3})
    cfg = from_dict({"scoring": {"scorers": ["length"]}})

Unknown sections and keys are errors; every violation of a field's type, `choices`, `min` or `max` is
reported with the key, the value and what is allowed, and then the cross-section rules run (unknown scorer
names are checked against `SCORER_NAMES`). `fedcurate validate FILE` runs this loader.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

from fedcurate.common.config.schema import (
    INT64,
    MAX_TABLES,
    SCORER_NAMES,
    Config,
    _dataclass_item,
    _hints,
    primary_scorer,
    sections,
    toml_key,
)
from fedcurate.common.data.formats import MAPPABLE
from fedcurate.common.registry import Registry

# The names `scoring.scorers` accepts; a Registry, for its message (the closest names, then all)
_KNOWN_SCORERS: Registry[str] = Registry("scorer")
for _name in SCORER_NAMES:
    _KNOWN_SCORERS.register(_name)(_name)


class ConfigError(ValueError):
    """Every problem found in a config, reported at once."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} config error(s):\n" + "\n".join(f"  - {p}" for p in problems))


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML file (or defaults when `path` is None), apply dotted `overrides`, validate."""
    source = str(path) if path else "<defaults>"
    raw = _read_toml(Path(path), source) if path else {}
    for dotted, value in (overrides or {}).items():
        sec, _, key = dotted.partition(".")
        table = raw.setdefault(sec, {})
        if isinstance(table, dict):  # else from_dict reports "[sec] must be a table"
            table[key] = value
    return from_dict(raw, source)


def _read_toml(path: Path, source: str) -> dict[str, Any]:
    """The parsed file; any reason it cannot be read or parsed is a ConfigError naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except IsADirectoryError:
        raise ConfigError(source, ["is a directory, not a TOML file"]) from None
    except OSError as err:
        raise ConfigError(source, [f"cannot read: {err.strerror or err}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError(source, [f"not UTF-8 text (byte {err.start}, line {line})"]) from None
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as err:  # TOMLDecodeError; an integer beyond 4300 digits; deep nesting
        raise ConfigError(source, [f"invalid TOML: {err}"]) from None


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a Config from nested {section: {kebab-key: value}}."""
    return _from_raw(raw, source, [])


def _from_raw(raw: dict[str, Any], source: str, problems: list[str]) -> Config:
    """from_dict, adding to the `problems` already found (by from_flat), all raised at once."""
    built: dict[str, Any] = {}
    known = sections()
    for sec in raw:
        if sec not in known:
            problems.append(f"unknown section [{sec}]; allowed: {', '.join(known)}")
    for sec, cls in known.items():
        values = raw.get(sec, {})
        if not isinstance(values, dict):
            problems.append(f"[{sec}] must be a table, got {type(values).__name__}")
            values = {}
        built[sec] = _build_section(sec, cls, values, problems)
    cfg = Config(**built)  # invalid values were left at their defaults, so cross-checks still run
    problems.extend(_cross_checks(cfg))
    if problems:
        raise ConfigError(source, problems)
    return cfg


def _build_section(sec: str, cls: type, values: dict[str, Any], problems: list[str]) -> Any:
    fields = {toml_key(f.name): f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            problems.append(f"{sec}.{key}: unknown key; allowed: {', '.join(fields)}")
            continue
        f = fields[key]
        item_t = _dataclass_item(hints[f.name])
        if item_t is not None:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                problems.append(f"{sec}.{key}: expected an array of tables ([[{sec}.{key}]])")
            elif len(value) > MAX_TABLES:
                problems.append(f"{sec}.{key}: {len(value)} tables; at most {MAX_TABLES} are allowed")
            else:
                kwargs[f.name] = [_build_section(f"{sec}.{key}[{i}]", item_t, v, problems)
                                  for i, v in enumerate(value)]
            continue
        err, coerced = _check_value(f"{sec}.{key}", value, hints[f.name], f.metadata)
        if err:
            problems.append(err)
        else:
            kwargs[f.name] = coerced
    return cls(**kwargs)


def _check_value(where: str, value: Any, typ: Any, meta: Any) -> tuple[str, Any]:
    """Return (error message or '', coerced value)."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item_t,) = typing.get_args(typ)
        if isinstance(value, str):  # Flower's run-config carries lists as comma-separated strings
            value = _split_list(value)
        if not isinstance(value, list):
            return f"{where} = {_show(value)}: expected a list of {item_t.__name__}", None
        out = []
        for i, v in enumerate(value):
            err, c = _check_scalar(f"{where}[{i}]", v, item_t)
            if err:
                return err, None
            out.append(c)
        return "", out
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            return f"{where} = {_show(value)}: expected a table of strings", None
        return "", dict(value)
    err, c = _check_scalar(where, value, typ)
    if err:
        return err, None
    if meta.get("choices") and c not in meta["choices"]:
        return f"{where} = {_show(c)}: allowed values are {', '.join(map(repr, meta['choices']))}", None
    if meta.get("min") is not None and c < meta["min"]:
        return f"{where} = {_show(c)}: must be >= {meta['min']}", None
    if meta.get("max") is not None and c > meta["max"]:
        return f"{where} = {_show(c)}: must be <= {meta['max']}", None
    return "", c


def _check_scalar(where: str, value: Any, typ: type) -> tuple[str, Any]:
    if typ is bool:
        if isinstance(value, bool):
            return "", value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64[0] <= value <= INT64[1]:
                return f"{where} = {_show(value)}: outside the 64-bit integer range of TOML and Flower", None
            return "", value
    elif typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond ~1.8e308
                return f"{where} = {_show(value)}: too large for a float (magnitude must be below 1.8e308)", None
            if math.isnan(number):
                return f"{where} = nan: must be a number", None
            return "", number
    elif typ is str:
        if isinstance(value, str):
            return "", value
    return f"{where} = {_show(value)}: expected {typ.__name__}, got {type(value).__name__}", None


def _show(value: Any) -> str:
    """repr for error messages, shortened when long (a 400-digit integer, a huge list)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit conversion limit
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _cross_checks(cfg: Config) -> list[str]:
    problems = []
    if cfg.scoring.primary and cfg.scoring.primary not in cfg.scoring.scorers:
        problems.append(f"scoring.primary = {cfg.scoring.primary!r}: must be one of scoring.scorers "
                        f"({', '.join(cfg.scoring.scorers)})")
    if not cfg.scoring.scorers:
        problems.append("scoring.scorers: give at least one scorer")
    for name in cfg.scoring.scorers:
        if name not in _KNOWN_SCORERS:
            try:
                _KNOWN_SCORERS.get(name)
            except KeyError as err:
                problems.append(f"scoring.scorers: {err.args[0]}")
    if cfg.federation.min_sites > cfg.federation.sites:
        problems.append(f"federation.min-sites = {cfg.federation.min_sites}: must be <= federation.sites "
                        f"({cfg.federation.sites})")
    needs_anchor = sorted(set(cfg.scoring.scorers) & {"clues", "datainf", "less"})
    if needs_anchor and not cfg.dynamics.anchor_path:
        problems.append(f"dynamics.anchor-path: scorers {', '.join(needs_anchor)} need a clean anchor set")
    names = [r.name for r in cfg.rating.raters]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"rating.raters: name {dup!r} is used by more than one rater")
    if cfg.scoring.weights and len(cfg.scoring.weights) != len(cfg.scoring.scorers):
        problems.append(f"scoring.weights: {len(cfg.scoring.weights)} weight(s) for {len(cfg.scoring.scorers)} "
                        f"scorer(s); give one per scorer, in the order of scoring.scorers")
    if cfg.selection.mode == "anchor" and (primary_scorer(cfg) != "clues" or cfg.scoring.weights):
        problems.append("selection.mode = 'anchor' (the CLUES rule) needs scoring.primary = 'clues' and no "
                        "scoring.weights")
    priv = cfg.privacy
    if priv.dp_epsilon > 0:
        if not 0 < priv.dp_delta < 1:
            problems.append(f"privacy.dp-delta = {priv.dp_delta}: must lie in (0, 1) when privacy.dp-epsilon > 0")
        if cfg.selection.mode == "anchor":
            problems.append("privacy.dp-epsilon with selection.mode = 'anchor': the anchor rule needs no histograms; "
                            "turn DP off or use a fraction/count budget")
    if priv.dp_epsilon > 0 or priv.secure_aggregation:
        if len(priv.score_range) != 2 or not priv.score_range[0] < priv.score_range[1]:
            why = "privacy.dp-epsilon > 0" if priv.dp_epsilon > 0 else "privacy.secure-aggregation = true"
            problems.append(f"privacy.score-range = {priv.score_range}: give [lo, hi] with lo < hi when "
                            f"{why} (the grid must not come from the sites' extreme scores)")
    if priv.train_noise_multiplier > 0:
        if not 0 < priv.dp_delta < 1:
            problems.append(f"privacy.dp-delta = {priv.dp_delta}: must lie in (0, 1) when "
                            f"privacy.train-noise-multiplier > 0")
        if not priv.train_clipping_norm > 0:
            problems.append("privacy.train-clipping-norm must be > 0 when privacy.train-noise-multiplier > 0")
        if cfg.federation.aggregation != "fedavg":
            problems.append(f"privacy.train-noise-multiplier with federation.aggregation = "
                            f"{cfg.federation.aggregation!r}: DP training needs 'fedavg' rounds")
    if priv.secure_aggregation and not priv.secagg_threshold > 0:
        problems.append("privacy.secagg-threshold = 0: give the fraction of sites needed to unmask, in (0, 1]")
    rates = cfg.federation.site_noise_rates
    if rates and any(not 0.0 <= r <= 1.0 for r in rates):
        problems.append(f"federation.site-noise-rates = {_show(rates)}: every rate must lie in [0, 1]")
    return problems + _check_columns(cfg.data.columns)


def _check_columns(columns: dict[str, str]) -> list[str]:
    """data.columns maps Sample fields (the ones the data loader accepts) to non-empty column names."""
    problems = []
    for key, column in columns.items():
        if key not in MAPPABLE:
            problems.append(f"data.columns: {_show(key)} is not a Sample field; allowed: {', '.join(MAPPABLE)}")
        elif not column:
            problems.append(f"data.columns.{key} = '': expected a non-empty column name")
    return problems

def _split_list(text: str) -> list[Any]:
    """Inverse of `_flat_list`: a JSON array, or comma-separated items (stripped, empty ones dropped)."""
    if text.startswith("["):
        try:
            items = json.loads(text)
        except (ValueError, RecursionError):
            items = None  # not JSON after all: a comma-separated list whose first item starts with '['
        if isinstance(items, list):
            return items
    return [v.strip() for v in text.split(",") if v.strip()]
