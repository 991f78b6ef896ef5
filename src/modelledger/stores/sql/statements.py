"""The SQL store's statements: built once, since building a statement costs more than running it."""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..._members import MEMBER_ACTIONS
from . import tables as t

__all__ = [
    "COMPACT",
    "ESC",
    "bp",
    "like_escape",
    "named",
    "normalise_url",
]


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


ESC = "\\"


def like_escape(text: str) -> str:
    """Make ``text`` match itself in a LIKE pattern (escape character: ESC)."""
    return text.replace(ESC, ESC + ESC).replace("%", ESC + "%").replace("_", ESC + "_")


COMPACT = json.JSONEncoder(separators=(",", ":"))


def bp(name: str) -> Any:
    return sa.bindparam(name)


def named(value: Any) -> Any:
    """The models row named ``value`` (a bound parameter or a string) in any case: names are
    unique without regard to case (the unique index on ``lower(name)`` answers this)."""
    return sa.func.lower(t.models.c.name) == sa.func.lower(value)


VERSION_COLS = (
    t.versions.c.id.label("key"),
    t.models.c.name.label("model_name"),
    t.versions.c.version,
    t.versions.c.folder,
    t.versions.c.digest,
    t.versions.c.flavor,
    t.versions.c.files,
    t.versions.c.manifest,
    # read as text and parsed with fromisoformat: SQLAlchemy's SQLite DATETIME parser is a regex
    sa.type_coerce(t.versions.c.created_at, sa.String).label("created_at"),
    t.versions.c.created_by,
)
VERSIONS_Q = sa.select(*VERSION_COLS).join(t.models, t.models.c.id == t.versions.c.model_id)


class json_list(FunctionElement[str]):
    """An aggregate: the values as a JSON array text (NULL or ``[]`` when there are none)."""

    type = sa.Text()
    inherit_cache = True


class json_map(FunctionElement[str]):
    """An aggregate of (key, value) pairs as a JSON object text (NULL or ``{}`` when none)."""

    type = sa.Text()
    inherit_cache = True


_JSON_AGGREGATES: dict[type[FunctionElement[str]], dict[str, str]] = {
    json_list: {"postgresql": "json_agg({})::text", "sqlite": "json_group_array({})"},
    json_map: {"postgresql": "json_object_agg({})::text", "sqlite": "json_group_object({})"},
}


def _compile_as(construct: type[FunctionElement[str]], dialect: str, template: str) -> None:
    @compiles(construct, dialect)
    def _compile(element: FunctionElement[str], compiler: Any, **kw: Any) -> str:
        return template.format(compiler.process(element.clauses, **kw))


for _construct, _templates in _JSON_AGGREGATES.items():
    for _dialect, _template in _templates.items():
        _compile_as(_construct, _dialect, _template)


# A version with its aliases and tags (two more columns, JSON texts) in the same statement: one
# round trip for a version or a page of them, where a query per kind took three.
NAMED_VERSIONS_Q = sa.select(
    *VERSION_COLS,
    sa.select(json_list(t.aliases.c.alias))
    .where(t.aliases.c.model_id == t.versions.c.model_id, t.aliases.c.version == t.versions.c.version)
    .correlate(t.versions)  # only the version: a query that also joins aliases keeps its own
    .scalar_subquery()
    .label("aliases"),
    sa.select(json_map(t.version_tags.c.key, t.version_tags.c.value))
    .where(t.version_tags.c.version_id == t.versions.c.id)
    .correlate(t.versions)
    .scalar_subquery()
    .label("tags"),
).join(t.models, t.models.c.id == t.versions.c.model_id)
Q_MODEL = sa.select(t.models).where(named(bp("name")))
Q_VERSION = NAMED_VERSIONS_Q.where(named(bp("model")), t.versions.c.version == bp("version"))
Q_VERSION_LATEST = NAMED_VERSIONS_Q.where(named(bp("model"))).order_by(t.versions.c.version.desc()).limit(1)
Q_VERSION_BY_ALIAS = NAMED_VERSIONS_Q.join(
    t.aliases,
    sa.and_(t.aliases.c.model_id == t.versions.c.model_id, t.aliases.c.version == t.versions.c.version),
).where(named(bp("model")), t.aliases.c.alias == bp("alias"))
Q_VERSION_BY_KEY = VERSIONS_Q.where(t.versions.c.id == bp("key"))
Q_LIST_VERSIONS = (
    NAMED_VERSIONS_Q.where(named(bp("model")), t.versions.c.version < bp("before"))
    .order_by(t.versions.c.version.desc())
    .limit(bp("lim"))
)
Q_HEAD = sa.select(t.ledger_head.c.seq, t.ledger_head.c.hash).where(t.ledger_head.c.id == 1).with_for_update()
Q_HEAD_UPDATE = (
    t.ledger_head.update().where(t.ledger_head.c.id == 1).values(seq=bp("new_seq"), hash=bp("new_hash"))
)
Q_POLICY = sa.select(t.settings.c.value).where(t.settings.c.key == "policy")
Q_ALIAS_MAP = sa.select(t.aliases.c.alias, t.aliases.c.version).where(t.aliases.c.model_id == bp("mid"))
Q_MODEL_AND_VERSION = (
    sa.select(t.models.c.id, t.versions.c.id.label("version_id"), t.models.c.archived_at, t.models.c.name)
    .select_from(t.models)
    .outerjoin(
        t.versions,
        sa.and_(t.versions.c.model_id == t.models.c.id, t.versions.c.version == bp("version")),
    )
    .where(named(bp("name")))
)
# The state of several versions of one model, named by the model's name: one round trip
Q_VERSION_STATES = (
    sa.select(
        t.version_state.c.version,
        t.version_state.c.stage,
        t.version_state.c.registered_by,
        t.version_state.c.approved_by,
        t.version_state.c.decided_at,
        t.version_state.c.last_seq,
        t.models.c.name,
    )
    .join(t.models, t.models.c.id == t.version_state.c.model_id)
    .where(
        named(bp("model")),
        t.version_state.c.version.in_(sa.bindparam("versions", expanding=True)),
    )
)
Q_STATE = sa.select(
    t.version_state.c.stage,
    t.version_state.c.registered_by,
    t.version_state.c.approved_by,
    t.version_state.c.decided_at,
    t.version_state.c.last_seq,
).where(t.version_state.c.model_id == bp("mid"), t.version_state.c.version == bp("version"))
Q_STATE_INSERT = t.version_state.insert()
Q_STATE_UPDATE = t.version_state.update().where(
    t.version_state.c.model_id == bp("mid_"), t.version_state.c.version == bp("version_")
)
Q_EVENTS_INSERT = t.ledger_events.insert()
Q_CHECKPOINT_INSERT = t.ledger_checkpoints.insert()
Q_NEXT_VERSION = (
    t.models.update()
    .where(named(bp("model_name")))
    .values(last_version=t.models.c.last_version + 1)
    .returning(t.models.c.id, t.models.c.last_version, t.models.c.archived_at, t.models.c.name)
)
Q_VERSION_INSERT = t.versions.insert().returning(t.versions.c.id)
Q_MODEL_INSERT = t.models.insert()
Q_ALIAS_HISTORY_INSERT = t.alias_history.insert()
Q_ALIAS_DELETE = t.aliases.delete().where(t.aliases.c.model_id == bp("m"), t.aliases.c.alias == bp("a"))
# What a governed decision reads, straight from the ledger rather than from the state tables:
# the events about one subject (a version's stage and approvals), and the latest policy.
Q_SUBJECT_EVENTS = (
    sa.select(
        t.ledger_events.c.seq,
        t.ledger_events.c.time,
        t.ledger_events.c.actor,
        t.ledger_events.c.action,
        t.ledger_events.c.data,
    )
    .where(t.ledger_events.c.subject == bp("subject"))
    .order_by(t.ledger_events.c.seq)
)
Q_POLICY_EVENT = (
    sa.select(t.ledger_events.c.data)
    .where(
        t.ledger_events.c.subject == "registry",
        sa.or_(
            t.ledger_events.c.action == "policy.changed", t.ledger_events.c.action == "registry.initialized"
        ),
    )
    .order_by(t.ledger_events.c.seq.desc())
    .limit(1)
)

# Every rename, oldest first (index on action, seq): former model names resolve through them.
Q_RENAMES = (
    sa.select(t.ledger_events.c.data)
    .where(t.ledger_events.c.action == "model.renamed")
    .order_by(t.ledger_events.c.seq)
)
Q_VERSION_TAGS = sa.select(t.version_tags.c.version_id, t.version_tags.c.key, t.version_tags.c.value).where(
    t.version_tags.c.version_id.in_(sa.bindparam("keys", expanding=True))
)

# The newest enrolment event: the roster is rebuilt only when it changes (index on action, seq).
Q_EVENT_ROWS = (
    sa.select(
        t.ledger_events.c.seq,
        t.ledger_events.c.time,
        t.ledger_events.c.actor,
        t.ledger_events.c.action,
        t.ledger_events.c.subject,
        t.ledger_events.c.data,
        t.ledger_events.c.reason,
        t.ledger_events.c.hash,
    )
    .where(t.ledger_events.c.seq > bp("after"))
    .order_by(t.ledger_events.c.seq)
    .limit(bp("limit"))
)
Q_MEMBER_LAST = sa.select(sa.func.max(t.ledger_events.c.seq)).where(
    sa.or_(*(t.ledger_events.c.action == action for action in MEMBER_ACTIONS))
)

Q_METRICS_INSERT = t.version_metrics.insert().values(
    version_id=bp("version_id"), key=bp("key"), value=bp("value")
)


def metric_values(version_id: int, metrics: Any) -> list[dict[str, Any]]:
    """The rows of ``version_metrics`` for a manifest's metrics (finite numbers only)."""
    out = []
    for name, value in (metrics or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append({"version_id": version_id, "key": str(name), "value": float(value)})
    return out
