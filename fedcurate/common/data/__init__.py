"""Data layer: the `Sample` record, loaders for JSONL/JSON/Parquet/CSV/`datasets`, format adapters."""

from fedcurate.common.data.sample import DataError, Reject, Sample

__all__ = ["DataError", "Reject", "Sample"]
