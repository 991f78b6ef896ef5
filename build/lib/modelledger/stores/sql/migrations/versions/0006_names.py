"""Names and tags: archived models (``models.archived_at``) and version tags (``version_tags``),
both state indexed from the ledger (``model.archived``/``model.unarchived``, ``version.tagged``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("models", sa.Column("archived_at", sa.String(40), nullable=True))
    op.create_table(
        "version_tags",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_version_tags_key_value", "version_tags", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_version_tags_key_value", "version_tags")
    op.drop_table("version_tags")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("archived_at")
