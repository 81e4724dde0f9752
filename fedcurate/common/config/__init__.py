"""Typed experiment configuration: one frozen dataclass per TOML section, one loader.

    cfg = load_config("configs/centralized.toml")          # raises ConfigError listing every problem
    cfg = load_config("x.toml", overrides={"selection.fraction": 0.3})
    flat = to_flat(cfg); assert from_flat(flat) == cfg      # Flower's run-config bridge

TOML keys are kebab-case (`on-error`), fields snake_case (`on_error`). Unknown sections and keys are
errors. Each field may carry `choices`, `min` and `max` in its metadata; every violation is reported
with the key, the value and what is allowed, all at once. `fedcurate validate FILE` runs this loader.

One module per job, every public name re-exported here (import from `fedcurate.common.config`):
`schema` (the dataclasses, `sections`, `SCORER_NAMES`), `load` (`load_config`, `from_dict`, validation,
`ConfigError`), `toml_writer` (`to_dict`, `to_toml`), `flat` (`to_flat`, `from_flat`) and `reference`
(the README's configuration reference; `python -m fedcurate.common.config README.md` rewrites it).
"""

from fedcurate.common.config.flat import from_flat, to_flat
from fedcurate.common.config.load import ConfigError, from_dict, load_config
from fedcurate.common.config.reference import reference_markdown, update_readme
from fedcurate.common.config.schema import (
    INT64,
    MAX_TABLES,
    SCORER_NAMES,
    Config,
    CurationConfig,
    DataConfig,
    DynamicsConfig,
    EvaluationConfig,
    FederationConfig,
    FlatValue,
    ModelConfig,
    PrivacyConfig,
    RaterConfig,
    RatingConfig,
    RunConfig,
    ScoringConfig,
    SelectionConfig,
    SyntheticConfig,
    TrainingConfig,
    primary_scorer,
    sections,
    toml_key,
)
from fedcurate.common.config.toml_writer import to_dict, to_toml

__all__ = [
    "INT64", "MAX_TABLES", "SCORER_NAMES", "Config", "ConfigError", "CurationConfig", "DataConfig",
    "DynamicsConfig", "EvaluationConfig", "FederationConfig", "FlatValue", "ModelConfig", "PrivacyConfig",
    "RaterConfig", "RatingConfig", "RunConfig", "ScoringConfig", "SelectionConfig", "SyntheticConfig",
    "TrainingConfig", "from_dict", "from_flat", "load_config", "primary_scorer", "reference_markdown",
    "sections", "to_dict", "to_flat", "to_toml", "toml_key", "update_readme",
]
