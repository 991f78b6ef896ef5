"""The metadata schema as SQLAlchemy Core tables (the query side).

Migrations under ``migrations/versions`` create and change this schema; a test
checks that the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("archived_at", sa.String(40), nullable=True),  # 0006: state from the ledger
)
# 0009: a name is kept as given (Credit-Risk) but unique without regard to case, and every
# lookup by name compares lower(name), which this index answers.
sa.Index("uq_models_name_folded", sa.func.lower(models.c.name), unique=True)
# 0010: listing models in folded-name order, from a prefix: on SQLite the index above; on
# PostgreSQL the same expression in the "C" collation (a range of prefixes needs it).
sa.Index(
    "ix_models_name_folded_c",
    sa.func.lower(models.c.name).label("name_folded"),
    postgresql_ops={"name_folded": 'COLLATE "C"'},
    info={"dialect": "postgresql"},
).ddl_if(dialect="postgresql")

model_tags = sa.Table(
    "model_tags",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index("ix_model_tags_key_value", "key", "value"),
)

versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("folder", sa.String(512), nullable=False),
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("flavor", sa.String(32), nullable=False),
    sa.Column("files", sa.Text, nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False, server_default=""),
    sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    sa.UniqueConstraint("folder", name="uq_model_versions_folder"),
)

aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # 0011: the aliases of one version (what every version read names), one probe per version
    sa.Index("ix_model_aliases_version", "model_id", "version"),
)

# ---------------------------------------------------------------- governance (0002)

ledger_events = sa.Table(
    "ledger_events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("hash", sa.String(64), nullable=False),
    # 0010: (subject, action, seq) in place of (subject): "the first <action> about <subject>"
    # (what every load reads) is one probe; by subject alone, SQLite walked the action index
    sa.Index("ix_ledger_events_subject_action", "subject", "action", "seq"),
    sa.Index("ix_ledger_events_time", "time"),
    sa.Index("ix_ledger_events_action", "action", "seq"),
)
# 0010: a model's history is a range of subjects (models:/<name>/ up to models:/<name>0). On
# SQLite the subject index above answers it (BINARY collation); on PostgreSQL only an index in
# the "C" collation keeps every subject with a prefix together, whatever the database's own.
# (The collation is given where SQLAlchemy puts an operator class: after the column. Reflection
# does not report an index's collation, so it is declared where comparison leaves it alone.)
sa.Index(
    "ix_ledger_events_subject_c",
    ledger_events.c.subject,
    postgresql_ops={"subject": 'COLLATE "C"'},
    info={"dialect": "postgresql"},  # the migration test compares it on that backend only
).ddl_if(dialect="postgresql")

ledger_checkpoints = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("head_hash", sa.String(64), nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
)

ledger_head = sa.Table(
    "ledger_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

registry_keys = sa.Table(
    "registry_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("public_pem", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
)

version_state = sa.Table(
    "version_state",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("stage", sa.String(32), nullable=False),
    sa.Column("registered_by", sa.String(256), nullable=False),
    sa.Column("approved_by", sa.String(256), nullable=True),
    sa.Column("decided_at", sa.String(40), nullable=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_version_state_stage", "stage", "model_id", "version"),
)

alias_history = sa.Table(
    "alias_history",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    # 0010: alias_at and aliases_at read one entry from the end of an (alias, time) range
    sa.Index("ix_alias_history_at", "model_id", "alias", "time", "seq"),
)

settings = sa.Table(
    "registry_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# ---------------------------------------------------------------- data lineage (0003)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
)

dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
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

processing_steps = sa.Table(
    "processing_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("output_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("columns", sa.Text, nullable=False),
    sa.Column("code", sa.Text, nullable=False),
    sa.Index("ix_processing_steps_output", "output_id"),
)

step_inputs = sa.Table(
    "step_inputs",
    metadata,
    sa.Column("step_id", sa.Integer, sa.ForeignKey("processing_steps.id"), primary_key=True),
    sa.Column("input_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), primary_key=True),
    sa.Index("ix_step_inputs_input", "input_id"),
)

model_datasets = sa.Table(
    "model_datasets",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
    sa.Column("dataset_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), primary_key=True),
    sa.Column("role", sa.String(32), primary_key=True),
    sa.Index("ix_model_datasets_dataset", "dataset_version_id"),
)


# ---------------------------------------------------------------- search (0005)

version_metrics = sa.Table(
    "version_metrics",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    # a metric comparison reads one index range: key, then value
    sa.Index("ix_version_metrics_key_value", "key", "value", "version_id"),
)

# ---------------------------------------------------------------- names and tags (0006)

version_tags = sa.Table(
    "version_tags",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index("ix_version_tags_key_value", "key", "value"),
)

# ---------------------------------------------------------------- API tokens (0007)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("member", sa.String(256), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),  # SHA-256 hex: the secret is never stored
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=True),
    sa.Column("revoked_at", sa.String(40), nullable=True),  # from the token.revoked event
    sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    sa.Index("ix_api_tokens_member", "member"),
)

# ---------------------------------------------------------------- webhooks (0008)

webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),  # the HMAC key; emptied when removed
    sa.Column("actions", sa.Text, nullable=True),  # JSON list of action patterns; NULL: every action
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),  # the cursor: delivered up to here
    sa.Column("failures", sa.Integer, nullable=False),  # failed attempts at the event after it
    sa.Column("next_attempt_at", sa.String(40), nullable=True),
    sa.Column("claimed_by", sa.String(32), nullable=True),  # the delivery round holding it
    sa.Column("claimed_until", sa.String(40), nullable=True),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("webhook_id", sa.String(32), sa.ForeignKey("webhooks.id"), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("next_retry", sa.String(40), nullable=True),
    sa.Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
)
