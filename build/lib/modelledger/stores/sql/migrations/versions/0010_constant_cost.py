"""Indexes that keep the per-object reads at the same cost whatever the registry's size.

- ``alias_history (model_id, alias, time, seq)`` replaces ``(model_id, alias, time)``: the alias
  held at a time is the last entry of one index range, read from its end.
- ``ledger_events (subject, action, seq)`` replaces ``(subject)``: the first event of an action
  about a subject (the ``version.registered`` every load checks) is one probe. With the subject
  alone, SQLite, which keeps no statistics, read the action index instead: every registration.
- PostgreSQL only: ``ledger_events (subject COLLATE "C")`` and ``models (lower(name) COLLATE
  "C")``. A model's history and a name prefix are ranges of strings, which only a byte-order
  collation keeps together; the queries compare in that collation. SQLite's BINARY collation
  already is one, so its existing indexes answer the same ranges.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_alias_history_at", "alias_history", ["model_id", "alias", "time", "seq"])
    op.drop_index("ix_alias_history_lookup", table_name="alias_history")
    op.create_index("ix_ledger_events_subject_action", "ledger_events", ["subject", "action", "seq"])
    op.drop_index("ix_ledger_events_subject", table_name="ledger_events")
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_ledger_events_subject_c", "ledger_events", [sa.text('subject COLLATE "C"')])
        op.create_index("ix_models_name_folded_c", "models", [sa.text('lower(name) COLLATE "C"')])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_models_name_folded_c", table_name="models")
        op.drop_index("ix_ledger_events_subject_c", table_name="ledger_events")
    op.create_index("ix_ledger_events_subject", "ledger_events", ["subject"])
    op.drop_index("ix_ledger_events_subject_action", table_name="ledger_events")
    op.create_index("ix_alias_history_lookup", "alias_history", ["model_id", "alias", "time"])
    op.drop_index("ix_alias_history_at", table_name="alias_history")
