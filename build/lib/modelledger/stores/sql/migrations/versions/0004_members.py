"""Members: an index to rebuild the roster (enrolment events) without walking the ledger.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_events_action", "ledger_events", ["action", "seq"])


def downgrade() -> None:
    op.drop_index("ix_ledger_events_action", "ledger_events")
