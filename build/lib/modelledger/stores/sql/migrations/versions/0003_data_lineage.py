"""Data lineage: dataset versions, processing steps and model-dataset links.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("schema", sa.Text, nullable=False),
        sa.Column("stats", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False, server_default=""),
        sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_version"),
        sa.UniqueConstraint("dataset_id", "digest", name="uq_dataset_versions_digest"),
    )
    op.create_table(
        "processing_steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("output_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("columns", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
    )
    op.create_index("ix_processing_steps_output", "processing_steps", ["output_id"])
    op.create_table(
        "step_inputs",
        sa.Column("step_id", sa.Integer, sa.ForeignKey("processing_steps.id"), primary_key=True),
        sa.Column("input_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), primary_key=True),
    )
    op.create_index("ix_step_inputs_input", "step_inputs", ["input_id"])
    op.create_table(
        "model_datasets",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
        sa.Column("dataset_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), primary_key=True),
        sa.Column("role", sa.String(32), primary_key=True),
    )
    op.create_index("ix_model_datasets_dataset", "model_datasets", ["dataset_version_id"])


def downgrade() -> None:
    op.drop_index("ix_model_datasets_dataset", table_name="model_datasets")
    op.drop_table("model_datasets")
    op.drop_index("ix_step_inputs_input", table_name="step_inputs")
    op.drop_table("step_inputs")
    op.drop_index("ix_processing_steps_output", table_name="processing_steps")
    op.drop_table("processing_steps")
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
