"""An index on ``model_aliases (model_id, version)``: the aliases of one version in one probe.

Every read of a version (by number, by alias, a page of them) names the aliases each version
holds, a subquery per row. With the primary key ``(model_id, alias)`` alone, that subquery read
every alias of the model for each row and kept those of the row's version: a page of 100
versions of a model with 50 aliases would read 5,000 alias rows. With this index each row reads its
own aliases only, whatever the model holds.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_model_aliases_version", "model_aliases", ["model_id", "version"])


def downgrade() -> None:
    op.drop_index("ix_model_aliases_version", table_name="model_aliases")
