"""Data versioning and data lineage: immutable Parquet copies, sources and processing steps."""

from __future__ import annotations

from .datasets import DatasetPlan, Datasets
from .steps import sklearn_steps

__all__ = ["DatasetPlan", "Datasets", "sklearn_steps"]
