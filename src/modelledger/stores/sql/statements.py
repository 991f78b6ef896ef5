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
    "byte_order",
    "const",
    "like_escape",
    "named",
    "normalise_url",
    "prefix_range",
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


class byte_order(FunctionElement[str]):
    """A text expression compared in code point order, whatever the database's collation:
    ``expr COLLATE "C"`` on PostgreSQL (a linguistic collation such as en_US does not keep
    the strings that start with a prefix together), ``expr`` on SQLite (BINARY already is).
    A range on it is answered by an index built with the same collation (migration 0010)."""

    type = sa.Text()
    inherit_cache = True


@compiles(byte_order)
def _byte_order_default(element: byte_order, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(byte_order, "postgresql")
def _byte_order_postgresql(element: byte_order, compiler: Any, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


_MAX_CHAR = chr(0x10FFFF)


def prefix_range(column: Any, prefix: str) -> Any:
    """``column`` starts with ``prefix``, as an index range rather than a LIKE: ``prefix <=
    column < successor``, where the successor is the first string past every string that
    starts with ``prefix`` in code point order. LIKE needs escaping, is case-insensitive on
    SQLite and, with an ESCAPE clause or a bound pattern, is read as a filter, not a range."""
    col = byte_order(column)
    stem = prefix.rstrip(_MAX_CHAR)
    if not stem:  # empty, or only the last code point: no upper bound
        return col >= prefix
    after = ord(stem[-1]) + 1
    upper = stem[:-1] + chr(0xE000 if 0xD800 <= after <= 0xDFFF else after)  # no lone surrogate
    return sa.and_(col >= prefix, col < upper)


def bp(name: str) -> Any:
    return sa.bindparam(name)


def const(text: str) -> Any:
    """A constant string written into the SQL, not sent as a parameter. psycopg prepares a
    statement on its fifth run, and PostgreSQL may then plan it once for any value (a generic
    plan), guessing the value's frequency from the average: for ``max(seq) WHERE action = $1``
    it guessed a common action and walked the ledger back from its head, past every
    registration, to the enrolments near its start (230,000 buffers, 2.3-2.9 s on every
    governed write, at 1,000,000 events). With the value in the text, every plan is made for
    that value. Only for constants of the code, never for values from a caller."""
    return sa.literal_column("'" + text.replace("'", "''") + "'", sa.String)


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
# The model's id as a value computed first (PostgreSQL: an InitPlan, one probe of the name
# index), so every read of a model's versions is a probe or one range of the unique
# (model_id, version) index, whatever the planner's statistics say. Joined by name instead,
# PostgreSQL reads and sorts every version of the model for a page; for one version it may walk
# that index from end to end for the number alone (the plan it chose in a registry of 300
# versions); and by alias it read every version of the model to join the alias's one.
_MODEL_ID = sa.select(t.models.c.id).where(named(bp("model"))).correlate(None).scalar_subquery()
Q_VERSION = NAMED_VERSIONS_Q.where(t.versions.c.model_id == _MODEL_ID, t.versions.c.version == bp("version"))
# the version the alias names, as a value too: one probe of the aliases' primary key
_ALIAS_VERSION = (
    sa.select(t.aliases.c.version)
    .where(t.aliases.c.model_id == _MODEL_ID, t.aliases.c.alias == bp("alias"))
    .correlate(None)
    .scalar_subquery()
)
Q_VERSION_BY_ALIAS = NAMED_VERSIONS_Q.where(
    t.versions.c.model_id == _MODEL_ID, t.versions.c.version == _ALIAS_VERSION
)
Q_VERSION_BY_KEY = VERSIONS_Q.where(t.versions.c.id == bp("key"))


def _page_of_versions(before: Any, limit: Any) -> Any:
    """The model's versions numbered below ``before``, newest first, at most ``limit``, whatever
    their numbers (see Q_LIST_VERSIONS for the page read by number): the rows
    of ``NAMED_VERSIONS_Q``, read as one backward range of the unique (model_id, version) index
    that stops after ``limit`` entries, whatever the planner believes about the model's size.

    Asked as ``model_id = :id AND version < :before ORDER BY version DESC LIMIT n``, PostgreSQL
    weighs the index's order against sorting what it finds, by its estimate of the model's
    versions. An id computed in the statement has no statistics behind it: the planner takes
    the average model (99 versions in the bench's registry of 100,000), sorts, and so read all
    24,985 versions of the largest model (10,580 buffers, 185 ms) for a page of 100, once
    ANALYZE had run. Here the range is the row comparison ``(model_id, version) < (:id,
    :before)`` in the index's own order: the planner takes a third of the table to lie below
    it, so once the table is large the index order with the LIMIT is the cheap plan (while the
    table is small it may read what lies below and sort it: the small table). The range runs on
    into the previous model's versions when this one has fewer than ``limit`` left; the outer
    filter (which PostgreSQL cannot push below a LIMIT) drops those. Used where the numbers may
    not be consecutive; Q_LIST_VERSIONS bounds a page whatever the plan."""
    v = t.versions.c
    page = (
        sa.select(
            v.id,
            v.model_id,
            v.version,
            v.folder,
            v.digest,
            v.flavor,
            v.files,
            v.manifest,
            v.created_at,
            v.created_by,
        )
        .where(sa.tuple_(v.model_id, v.version) < sa.tuple_(_MODEL_ID, before))
        .order_by(v.model_id.desc(), v.version.desc())
        .limit(limit)
        .subquery("page")
    )
    p = page.c
    return (
        sa.select(
            p.id.label("key"),
            t.models.c.name.label("model_name"),
            p.version,
            p.folder,
            p.digest,
            p.flavor,
            p.files,
            p.manifest,
            sa.type_coerce(p.created_at, sa.String).label("created_at"),
            p.created_by,
            sa.select(json_list(t.aliases.c.alias))
            .where(t.aliases.c.model_id == p.model_id, t.aliases.c.version == p.version)
            .correlate(page)
            .scalar_subquery()
            .label("aliases"),
            sa.select(json_map(t.version_tags.c.key, t.version_tags.c.value))
            .where(t.version_tags.c.version_id == p.id)
            .correlate(page)
            .scalar_subquery()
            .label("tags"),
        )
        .select_from(page.join(t.models, t.models.c.id == p.model_id))
        .where(p.model_id == _MODEL_ID)
        .order_by(p.version.desc())
    )


Q_LIST_VERSIONS_BELOW = _page_of_versions(bp("before"), bp("lim"))
Q_VERSION_LATEST = _page_of_versions(sa.bindparam("before", 2**31 - 1, type_=sa.Integer), 1)

# A page as a window of numbers: a model's versions are numbered 1, 2, 3... without gaps (the
# number is taken from models.last_version in the transaction that inserts the version, and no
# version is ever deleted), so the ``lim`` versions below ``before`` are the numbers
# [top - lim, top), top being ``before`` or, past the model's last version, that version + 1.
# Only those rows satisfy the condition: whichever plan PostgreSQL picks (the index's order or a
# sort), a page reads at most ``lim`` rows. A window that comes back short above version 1
# (numbers missing, should a version ever be removed) is completed by Q_LIST_VERSIONS_BELOW.
_LAST = t.models.c.last_version
_TOP = (
    sa.select(sa.case((bp("before") <= _LAST, bp("before")), else_=_LAST + 1))
    .where(named(bp("model")))
    .correlate(None)
    .scalar_subquery()
)
Q_LIST_VERSIONS = (
    NAMED_VERSIONS_Q.where(
        t.versions.c.model_id == _MODEL_ID,
        t.versions.c.version < _TOP,
        t.versions.c.version >= _TOP - bp("lim"),
    )
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
        t.ledger_events.c.subject == const("registry"),
        sa.or_(
            t.ledger_events.c.action == const("policy.changed"),
            t.ledger_events.c.action == const("registry.initialized"),
        ),
    )
    .order_by(t.ledger_events.c.seq.desc())
    .limit(sa.literal_column("1"))  # in the text too: a generic plan would guess 10% for $1
)

# Every rename, oldest first (index on action, seq): former model names resolve through them.
Q_RENAMES = (
    sa.select(t.ledger_events.c.data)
    .where(t.ledger_events.c.action == const("model.renamed"))
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
# The seq of the latest membership event (is a cached roster current?), read on every governed
# write. One max per action, each a single backward probe of ix_ledger_events_action: with the
# actions OR-ed in one max, PostgreSQL walked the primary key back from the head until it met a
# membership event, which in a ledger of registrations is near its start (54 ms at 120,000
# events, growing with the ledger).
_MEMBER_LASTS = sa.union_all(
    *(
        sa.select(sa.func.max(t.ledger_events.c.seq).label("seq")).where(
            t.ledger_events.c.action == const(action)
        )
        for action in MEMBER_ACTIONS
    )
).subquery("member_lasts")
Q_MEMBER_LAST = sa.select(sa.func.max(_MEMBER_LASTS.c.seq))

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


# ---------------------------------------------------------------- aliases back in time
# Both read ix_alias_history_at (model_id, alias, time, seq). "At time T" is the move with the
# latest time at or before T, the later seq first among moves of the same instant (the moves of
# one append share its time). Every append stamps its time under the ledger lock, so times
# follow seq unless the writer's clock steps back; then the stamps decide, as they do for any
# reader who asks "at T". Ordering by seq alone would read every move after T to find it.
_H = t.alias_history.c


def _held_at(history: Any, alias: Any) -> Any:
    """The version ``alias`` of model ``:mid`` named at ``:time`` (NULL: removed or not yet
    set): one probe of the index, from its end."""
    h = history.c
    return (
        sa.select(h.version)
        .where(h.model_id == bp("mid"), h.alias == alias, h.time <= bp("time"))
        .order_by(h.time.desc(), h.seq.desc())
        .limit(1)
    )


Q_ALIAS_AT = _held_at(t.alias_history, bp("alias"))

# The model's alias names by a loose index scan (each the least name after the previous, one
# probe each), then the version each held at :time: the cost follows the number of alias names,
# not the number of moves.
_names = (
    sa.select(sa.func.min(_H.alias).label("alias"))
    .where(_H.model_id == bp("mid"))
    .cte("names", recursive=True)
)
_later = t.alias_history.alias("later")
_names = _names.union_all(
    sa.select(
        sa.select(sa.func.min(_later.c.alias))
        .where(_later.c.model_id == bp("mid"), _later.c.alias > _names.c.alias)
        .scalar_subquery()
    ).where(_names.c.alias.is_not(None))
)
Q_ALIASES_AT = sa.select(_names.c.alias).where(
    _names.c.alias.is_not(None),
    _held_at(t.alias_history.alias("held"), _names.c.alias).correlate(_names).scalar_subquery()
    == bp("version"),
)

# The move that set each alias the model has now: per alias name (the loose scan above), its
# latest move, kept when it set a version (a removal leaves the alias out). The cost follows
# the number of alias names, where folding the whole history followed the moves.
_last = t.alias_history.alias("last")
_last_seq = (
    sa.select(_last.c.seq)
    .where(_last.c.model_id == bp("mid"), _last.c.alias == _names.c.alias)
    .order_by(_last.c.time.desc(), _last.c.seq.desc())
    .limit(1)
    .correlate(_names)
    .scalar_subquery()
)
# The seq of each alias name's latest move, then those rows by primary key: two statements,
# each plainly an index read (joined in one, PostgreSQL may merge-join along the whole key).
Q_ALIAS_LATEST_SEQS = sa.select(_last_seq).select_from(_names).where(_names.c.alias.is_not(None))
Q_ALIAS_MOVES = (
    sa.select(t.alias_history)
    .where(
        t.alias_history.c.seq.in_(sa.bindparam("seqs", expanding=True)),
        t.alias_history.c.version.is_not(None),
    )
    .order_by(t.alias_history.c.alias)
)


def _folder_taken(n: str) -> str:
    """SQL: the version folder numbered ``n`` (``:base``, ``:base.2``...) is registered."""
    dotted = f"CAST(:dotted AS VARCHAR(512)) || CAST({n} AS VARCHAR(20))"
    name = f"CASE WHEN {n} = 1 THEN CAST(:base AS VARCHAR(512)) ELSE {dotted} END"
    return f"EXISTS (SELECT 1 FROM {t.versions.name} WHERE folder = {name})"


# Folder suffixes do not sort as strings ("key.10" < "key.9"), so the highest cannot be read off
# the end of a range of the unique folder index. Instead: double n while folder n is registered,
# then bisect between the last registered and the first missing one, every probe one lookup in
# that index, all in one statement (one round trip): about 2*log2(n) lookups, whatever the number
# of versions or of folders sharing the key. A gap (a claim whose registration failed) may stop
# the search below the highest; what it returns is still a number whose successor is free.
Q_HIGHEST_FOLDER_SUFFIX = sa.text(
    f"""
WITH RECURSIVE gallop(n) AS (
    SELECT 1
    UNION ALL
    SELECT n * 2 FROM gallop WHERE n < 1073741824 AND {_folder_taken("n")}
), bisect(lo, hi) AS (
    SELECT max(n) / 2, max(n) FROM gallop
    UNION ALL
    SELECT
        CASE WHEN {_folder_taken("(lo + hi) / 2")} THEN (lo + hi) / 2 ELSE lo END,
        CASE WHEN {_folder_taken("(lo + hi) / 2")} THEN hi ELSE (lo + hi) / 2 END
    FROM bisect WHERE hi - lo > 1
)
SELECT max(lo) FROM bisect
"""
)
