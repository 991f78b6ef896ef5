"""Search: metrics in their own indexed table, and an index on stages.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import json
import math

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_metrics",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
    )
    op.create_index("ix_version_metrics_key_value", "version_metrics", ["key", "value", "version_id"])
    op.create_index("ix_version_state_stage", "version_state", ["stage", "model_id", "version"])
    # versions registered before: their manifests' numeric metrics
    conn = op.get_bind()
    rows = []
    for key, manifest in conn.execute(sa.text("SELECT id, manifest FROM model_versions")):
        metrics = (json.loads(manifest) or {}).get("metrics") or {}
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                rows.append({"v": key, "k": name, "x": float(value)})
    if rows:
        conn.execute(
            sa.text("INSERT INTO version_metrics (version_id, key, value) VALUES (:v, :k, :x)"), rows
        )


def downgrade() -> None:
    op.drop_index("ix_version_state_stage", "version_state")
    op.drop_index("ix_version_metrics_key_value", "version_metrics")
    op.drop_table("version_metrics")
