"""Model names keep their case but are unique without regard to it: a unique index on
``lower(name)``, which also answers every lookup by name (they compare ``lower(name)``).
Names written before this revision were all lower-case, so none can collide.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("uq_models_name_folded", "models", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_models_name_folded", table_name="models")
