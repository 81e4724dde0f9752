"""Typed experiment configuration; the module moved to `schema.py`, re-exported here unchanged.

    cfg = load_config("configs/centralized.toml")          # raises ConfigError listing every problem
    flat = to_flat(cfg); assert from_flat(flat) == cfg      # Flower's run-config bridge
"""

from fedcurate.common.config.schema import (
    INT64,
    MAX_TABLES,
    Config,
    ConfigError,
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
    from_dict,
    from_flat,
    load_config,
    primary_scorer,
    reference_markdown,
    sections,
    to_dict,
    to_flat,
    to_toml,
    toml_key,
    update_readme,
)

__all__ = [
    "INT64", "MAX_TABLES", "Config", "ConfigError", "CurationConfig", "DataConfig",
    "DynamicsConfig", "EvaluationConfig", "FederationConfig", "FlatValue", "ModelConfig", "PrivacyConfig",
    "RaterConfig", "RatingConfig", "RunConfig", "ScoringConfig", "SelectionConfig", "SyntheticConfig",
    "TrainingConfig", "from_dict", "from_flat", "load_config", "primary_scorer", "reference_markdown",
    "sections", "to_dict", "to_flat", "to_toml", "toml_key", "update_readme",
]
