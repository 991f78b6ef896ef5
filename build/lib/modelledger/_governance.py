"""Governance verbs of the Registry: stages, validation, approval, deployment, the ledger.

Every verb here appends to the hash-chained ledger in the same transaction as the
state change it records; the state tables are an index of the ledger.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ._audit import AliasChange, StateDifference, state_differences, subject_history
from ._domain import Model, ModelVersion, Page
from ._identifiers import check_number, fold_name, model_subjects, validate_alias, validate_name
from ._keys import key_id, read_public_pem
from ._ledger import ChainReport, LedgerEvent, verify_chain
from ._lifecycle import (
    EventDraft,
    VersionState,
    decide_approval,
    decide_archive,
    decide_deploy,
    decide_policy,
    decide_rename,
    decide_rollback,
    decide_stage,
    decide_validation,
    evaluate_gates,
    parse_gates,
    replay,
)
from ._members import Member, check_roles
from ._paging import check_limit, decode_cursor, make_page
from ._policy import Policy
from ._signing import keyring, validate_member
from ._time import now, parse_duration, parse_time, to_text
from ._tokens import ApiToken, check_token_id, is_token, new_token, new_token_id, token_digest
from .errors import Conflict, InvalidInput, InvalidToken, ModelRenamed, NotFound
from .stores.protocols import MetadataStore, Signer

__all__ = ["GovernanceVerbs"]


def _when(value: datetime | str, what: str) -> str:
    """A user's time as the ledger's text form, so that it compares with stored times."""
    return to_text(parse_time(value, what=what))


class GovernanceVerbs:
    """Mixed into :class:`~modelledger.Registry`; see its documentation."""

    _meta: MetadataStore

    if TYPE_CHECKING:  # provided by Registry

        def _ready(self, *, write: bool = False) -> None: ...
        def _signer(self) -> Signer: ...
        @property
        def actor(self) -> str: ...
        def get_version(self, name_or_uri: str, version: int | None = None) -> ModelVersion: ...

    # ------------------------------------------------------------------ names

    def _renamed(self, name: str) -> str | None:
        """The name the model once called ``name`` (in any case) has now, with a
        :class:`ModelRenamed` warning; None when ``name`` was never renamed."""
        folded = {fold_name(old): new for old, new in self._meta.renamed_models().items()}
        new: str | None = folded.get(fold_name(name))
        if new is not None:
            warnings.warn(ModelRenamed(name, new), stacklevel=4)
        return new

    def _stored_name(self, name: str) -> str | None:
        """The model's name as stored (``Credit-Risk`` for ``credit-risk``), None if no model
        has that name in any case."""
        try:
            model: Model = self._meta.get_model(name)
        except NotFound:
            return None
        return model.name

    def _model_names(self, name: str) -> tuple[str, list[str]]:
        """(the model's current name as stored, every name it has had: current first) for
        ``name``, in any case; it may be a former name (then with a warning)."""
        renames: dict[str, str] = self._meta.renamed_models()
        current = self._stored_name(name)
        if current is None:
            folded = {fold_name(old): new for old, new in renames.items()}
            current = folded.get(fold_name(name), name)
            if current != name:
                warnings.warn(ModelRenamed(name, current), stacklevel=4)
        return current, [current, *(old for old, new in renames.items() if new == current)]

    def _current_name(self, name: str) -> str:
        validate_name(name)
        self._ready()
        return self._model_names(name)[0]

    def archive_model(self, name: str, *, reason: str | None = None) -> Model:
        """Archive a model: hidden from :meth:`list_models` (unless ``include_archived``), it
        takes no new versions and no deployments; its versions still load. A ``model.archived``
        ledger event (role: admin).

        >>> registry.archive_model("credit-risk-v0", reason="replaced by credit-risk")  # doctest: +SKIP
        """
        current = self._current_name(name)
        self._name_write(current, lambda ctx: decide_archive(ctx, archive=True, reason=reason))
        model: Model = self._meta.get_model(current)
        return model

    def unarchive_model(self, name: str, *, reason: str | None = None) -> Model:
        """Bring an archived model back (``model.unarchived``, role: admin)."""
        current = self._current_name(name)
        self._name_write(current, lambda ctx: decide_archive(ctx, archive=False, reason=reason))
        model: Model = self._meta.get_model(current)
        return model

    unarchive = unarchive_model

    def rename_model(self, old: str, new: str, *, reason: str) -> Model:
        """Rename a model (``model.renamed``, role: admin, for both names). Its history stays
        with it (``history(new)`` shows the events written under the old name), its artefact
        folders keep their paths (no byte moves), and the old name keeps resolving
        (``models:/old/3`` loads the same version, with a :class:`ModelRenamed` warning). A
        former name is never reused by another model.

        >>> registry.rename_model("credit", "credit-risk", reason="GOV-12")  # doctest: +SKIP
        """
        validate_name(new)
        current = self._current_name(old)
        self._name_write(current, lambda ctx: decide_rename(ctx, new, reason=reason))
        model: Model = self._meta.get_model(new)
        return model

    def _name_write(self, name: str, decide: Any) -> None:
        self._meta.govern(
            name, None, decide, actor=self.actor, signer=self._signer(), needs_state=False, needs_policy=False
        )

    def retire(self, uri: str, *, reason: str) -> VersionState:
        """Retire a version: it can no longer be deployed, no alias may point at it (those that
        did are removed, and the ``stage.changed`` event lists them under ``aliases``), and
        loading it by alias is refused; loading it by number still works, for audit.

        >>> registry.retire("models:/credit-risk/2", reason="superseded by version 4")  # doctest: +SKIP
        """
        if not reason:
            raise InvalidInput("retiring a version needs a reason")
        return self.transition(uri, "retired", reason=reason)

    def _govern(self, target: str | ModelVersion, decide: Any) -> str:
        """Apply ``decide`` to the version ``target`` names now; returns its ``models:/x/N`` form.

        The number form matters: the decision may move the very alias the caller used.
        """
        mv = self.get_version(target) if isinstance(target, str) else target
        self._meta.govern(mv.model, mv.version, decide, actor=self.actor, signer=self._signer())
        return mv.uri

    # ------------------------------------------------------------------ state

    def state(self, uri: str) -> VersionState:
        """Stage and approval of a version.

        >>> registry.state("models:/credit-risk/3").stage  # doctest: +SKIP
        'validated'
        """
        mv = self.get_version(uri)
        state: VersionState = self._meta.version_state(mv.model, mv.version)
        return state

    def states(self, name: str, versions: Sequence[int]) -> dict[int, VersionState]:
        """Stage and approval of several versions of one model, read at once (for listings).

        >>> {n: s.stage for n, s in registry.states("credit-risk", [1, 2, 3]).items()}  # doctest: +SKIP
        {1: 'deployed', 2: 'rejected', 3: 'validated'}
        """
        validate_name(name)
        for v in versions:
            check_number(v)
        self._ready()
        states: dict[int, VersionState] = self._meta.version_states(name, list(versions))
        return states

    def transition(
        self, uri: str, stage: str, *, reason: str | None = None, details: Mapping[str, Any] | None = None
    ) -> VersionState:
        """Complete a manual stage (``data_prepared``, ``trained``) or retire a version.

        >>> registry.transition("models:/credit-risk/3", "retired", reason="superseded")  # doctest: +SKIP
        """
        return self.state(
            self._govern(uri, lambda ctx: decide_stage(ctx, stage, reason=reason, details=details or {}))
        )

    def validate(
        self,
        uri: str,
        *,
        metrics: Mapping[str, float] | None = None,
        dataset: str | None = None,
        reason: str | None = None,
    ) -> VersionState:
        """Evaluate the manifest's gates (on its metrics, or on ``metrics`` measured now).

        Every gate's result is recorded; the version becomes ``validated`` when all pass,
        ``rejected`` otherwise.

        >>> registry.validate("models:/x/3", metrics={"auc": 0.84}, dataset="holdout")  # doctest: +SKIP
        """
        mv = self.get_version(uri)
        measured = dict(mv.manifest.get("metrics") or {})
        for key, value in (metrics or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInput(f"metric {key!r} must be a number")
            measured[key] = float(value)
        results = evaluate_gates(parse_gates(mv.manifest.get("gates")), measured)
        return self.state(
            self._govern(mv, lambda ctx: decide_validation(ctx, results, reason=reason, dataset=dataset))
        )

    def approve(self, uri: str, *, reason: str) -> VersionState:
        """Approve a validated version. Four-eyes by default: not by whoever registered it.

        >>> registry.approve("models:/credit-risk/3", reason="reviewed holdout report #41")  # doctest: +SKIP
        """
        return self.state(self._govern(uri, lambda ctx: decide_approval(ctx, approve=True, reason=reason)))

    def reject(self, uri: str, *, reason: str) -> VersionState:
        """Reject a trained or validated version, with the reason."""
        return self.state(self._govern(uri, lambda ctx: decide_approval(ctx, approve=False, reason=reason)))

    def deploy(self, uri: str, *, alias: str | None = None, reason: str | None = None) -> VersionState:
        """Point the target alias (default: the manifest's, else ``production``) at an approved
        version; the previous holder becomes ``@rollback``.

        >>> registry.deploy("models:/credit-risk/3")  # doctest: +SKIP
        """
        mv = self.get_version(uri)
        target = validate_alias(alias or mv.manifest.get("target_alias") or "production")
        if target == "rollback":
            raise InvalidInput("@rollback is managed by deploy and rollback; deploy to another alias")
        return self.state(self._govern(mv, lambda ctx: decide_deploy(ctx, target, reason=reason)))

    def rollback(self, name: str, *, alias: str = "production", reason: str | None = None) -> int:
        """Move ``alias`` back to the version held by ``@rollback``; returns that version."""
        validate_alias(alias)
        name = self._current_name(name)
        events = self._meta.govern(
            name,
            None,
            lambda ctx: decide_rollback(ctx, alias, reason=reason),
            actor=self.actor,
            signer=self._signer(),
        )
        return int(events[0].data["to"])

    # ------------------------------------------------------------------ policy

    def policy(self) -> Policy:
        self._ready()
        policy: Policy = self._meta.policy()
        return policy

    def set_policy(self, policy: Policy | Mapping[str, Any], *, reason: str) -> Policy:
        """Change the approval policy; the change, and any relaxation, is recorded.

        >>> registry.set_policy({"four_eyes": False}, reason="team of one, GOV-7")  # doctest: +SKIP
        """
        new = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
        self._ready(write=True)
        self._meta.govern(
            "",
            None,
            lambda ctx: decide_policy(ctx, new, reason=reason),
            actor=self.actor,
            signer=self._signer(),
        )
        return new

    # ------------------------------------------------------------------ members

    def members(self) -> list[Member]:
        """Every member, their roles (scoped to model-name patterns) and keys, as the ledger says.

        >>> [(m.name, m.roles) for m in registry.members()]  # doctest: +SKIP
        [('alice@bank.example', ('admin',)), ('bob@bank.example', ('approver', 'deployer'))]
        """
        self._ready()
        return sorted(self._meta.roster().members.values(), key=lambda m: m.name)

    def enrol(
        self,
        name: str,
        public_key: bytes | str | os.PathLike[str],
        *,
        roles: Sequence[str] | str,
        models: Sequence[str] | str = ("*",),
        reason: str | None = None,
    ) -> Member:
        """Enrol a member (a person or a service) with their public key and roles; an admin's
        signed act. Roles: viewer, contributor, approver, deployer, serving, admin; ``models``
        scopes them to model-name patterns (``credit-*``). Enrolling an existing member's new
        key adds it; their roles are then replaced by ``roles``.

        >>> registry.enrol("bob@bank.example", "bob.pub", roles=["approver", "deployer"])  # doctest: +SKIP
        """
        validate_member(name)
        checked_roles, checked_models = check_roles(roles, models)
        pem = read_public_pem(public_key)
        kid = key_id(pem)
        data = {
            "member": name,
            "key_id": kid,
            "public_key": pem.decode(),
            "roles": list(checked_roles),
            "models": list(checked_models),
        }
        self._ready(write=True)
        owner = self._meta.roster().owner(kid)
        if owner is not None:
            raise Conflict(f"key {kid} is already enrolled, to {owner.name}")
        self._member_write("member.enrolled", name, data, reason)
        return self._meta.roster().members[name]

    def set_roles(
        self,
        name: str,
        roles: Sequence[str] | str,
        *,
        models: Sequence[str] | str = ("*",),
        reason: str | None = None,
    ) -> Member:
        """Replace a member's roles and model scope (an admin's signed act)."""
        checked_roles, checked_models = check_roles(roles, models)
        self._need_member(name)
        data = {"member": name, "roles": list(checked_roles), "models": list(checked_models)}
        self._member_write("member.roles_set", name, data, reason)
        return self._meta.roster().members[name]

    def revoke_key(self, name: str, key: str, *, reason: str) -> Member:
        """Revoke one of a member's keys (by key id): what it signs from now on is refused, and
        ``verify`` and receipt checks fail anything it signed after this event."""
        member = self._need_member(name)
        if not reason:
            raise InvalidInput("a revocation needs a reason")
        found = next((k for k in member.keys if k.key_id == key), None)
        if found is None:
            raise NotFound("key", f"{key} of {name}")
        if found.revoked_seq is not None:
            raise Conflict(f"key {key} of {name} was already revoked at ledger event {found.revoked_seq}")
        self._member_write("member.key_revoked", name, {"member": name, "key_id": key}, reason)
        return self._meta.roster().members[name]

    def _need_member(self, name: str) -> Member:
        validate_member(name)
        self._ready()
        member = self._meta.roster().members.get(name)
        if member is None:
            raise NotFound("member", name)
        return member

    def _member_write(self, action: str, name: str, data: Mapping[str, Any], reason: str | None) -> None:
        draft = EventDraft(action, f"members:/{name}", data, reason)
        self._meta.govern(
            "",
            None,
            lambda _ctx: [draft],
            actor=self.actor,
            signer=self._signer(),
            needs_state=False,
            needs_policy=False,
        )

    # ------------------------------------------------------------------ API tokens

    def create_token(
        self, member: str, *, expires: timedelta | str | None = None, reason: str | None = None
    ) -> tuple[str, ApiToken]:
        """Make an API token that stands for ``member`` over HTTP (an admin's signed act, a
        ``token.created`` ledger event). Returns the token, which is shown this once (the
        registry keeps only its SHA-256), and its record. ``expires`` is an age such as ``30d``
        (default: it never expires; revoke it with :meth:`revoke_token`).

        >>> token, record = registry.create_token("bob@bank.example", expires="30d")  # doctest: +SKIP
        >>> registry.authenticate_token(token).name  # doctest: +SKIP
        'bob@bank.example'
        """
        ttl = None if expires is None else parse_duration(expires, what="expires")
        if ttl is not None and ttl <= timedelta(0):
            raise InvalidInput("expires must be a positive age such as 30d, or None for no expiry")
        found = self._need_member(member)
        if not found.has_live_key:
            raise Conflict(f"every key of {member} is revoked: a token cannot stand for them")
        secret = new_token()
        record: ApiToken = self._meta.create_token(
            new_token_id(),
            member,
            token_digest(secret),
            None if ttl is None else to_text(now() + ttl),
            actor=self.actor,
            signer=self._signer(),
            reason=reason,
        )
        return secret, record

    def list_tokens(self, *, member: str | None = None) -> list[ApiToken]:
        """Every API token (of ``member``), oldest first: ids, members and times, never a secret.

        >>> [(t.id, t.member, t.revoked_at) for t in registry.list_tokens()]  # doctest: +SKIP
        """
        if member is not None:
            validate_member(member)
        self._ready()
        tokens: list[ApiToken] = self._meta.list_tokens(member=member)
        return tokens

    def revoke_token(self, token_id: str, *, reason: str | None = None) -> ApiToken:
        """Revoke an API token by its id (an admin's signed act, a ``token.revoked`` ledger
        event): from now on it authenticates no one.

        >>> registry.revoke_token("3f2a9c0d4e5b6a71", reason="laptop lost")  # doctest: +SKIP
        """
        check_token_id(token_id)
        self._ready()
        record: ApiToken = self._meta.revoke_token(
            token_id, actor=self.actor, signer=self._signer(), reason=reason
        )
        return record

    def authenticate_token(self, token: str) -> Member:
        """The member an API token stands for, as the ledger enrols them now; raises
        :class:`InvalidToken` for a token that is malformed, unknown, expired or revoked, or
        whose member holds no key that is not revoked (they have left). What the member may
        read is then ``Member.can_view`` / ``Member.has_role``.

        >>> registry.authenticate_token(request_token).roles  # doctest: +SKIP
        ('viewer',)
        """
        return self.authenticated_token(token)[0]

    def authenticated_token(self, token: str) -> tuple[Member, ApiToken]:
        """:meth:`authenticate_token`, with the token's record (its id, and ``expires_at``:
        until when the answer holds if nothing is revoked meanwhile).

        >>> member, record = registry.authenticated_token(request_token)  # doctest: +SKIP
        >>> record.expires_at  # doctest: +SKIP
        '2027-03-01T00:00:00.000000Z'
        """
        if not is_token(token):
            raise InvalidToken("the token is malformed (a token is mlt_ and 43 more characters)")
        self._ready()
        found = self._meta.token_holder(token_digest(token))
        if found is None:
            raise InvalidToken("unknown token")
        record, roster = found
        problem = record.problem(to_text(now()))
        if problem is not None:
            raise InvalidToken(problem)
        member: Member | None = roster.members.get(record.member)
        if member is None or not member.has_live_key:
            raise InvalidToken(f"{record.member} holds no key that is not revoked")
        return member, record

    # ------------------------------------------------------------------ history

    def alias_at(self, name: str, alias: str, when: datetime | str) -> int | None:
        """Which version held ``models:/<name>@<alias>`` at time ``when`` (None: no version).

        >>> registry.alias_at("credit-risk", "production", "2026-11-01T09:30:00Z")  # doctest: +SKIP
        2
        """
        validate_name(name)
        self._ready()
        version: int | None = self._meta.alias_at(name, alias, _when(when, "when"))
        return version

    def alias_history(
        self, name: str, alias: str | None = None, *, latest: bool = False
    ) -> list[AliasChange]:
        """Every move of the model's aliases (or of one alias), oldest first; with ``latest``, only
        the move that set each alias the model has now, by alias name (what ``alias list`` shows:
        its cost follows the number of aliases, not of moves).

        >>> registry.alias_history("credit-risk", latest=True)[0].actor  # doctest: +SKIP
        'bob@bank.example'
        """
        validate_name(name)
        self._ready()
        if latest:
            rows = [r for r in self._meta.current_alias_moves(name) if alias is None or r["alias"] == alias]
        else:
            rows = self._meta.alias_history(name, alias)
        return [AliasChange(**row) for row in rows]

    def audit(
        self,
        *,
        model: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[LedgerEvent]:
        """Ledger events, oldest first, filtered; ``action`` may end in ``*`` (``version.*``)."""
        prefixes: list[str] = []
        exact: list[str] = []
        check_limit(limit)
        after = decode_cursor(cursor, int) or 0
        if model is not None:
            validate_name(model)
            self._ready()
            names = self._model_names(model)[1]  # events written under former names too
            if version is not None:
                exact = [f"models:/{n}/{version}" for n in names]
            else:
                prefixes = [p for n in names for p in (f"models:/{n}/", f"models:/{n}@")]
        elif version is not None:
            raise InvalidInput("filtering by version needs the model too")
        self._ready()
        rows = self._meta.audit(
            subjects=exact,
            subject_prefixes=prefixes,
            actor=actor,
            action=action,
            since=_when(since, "since") if since else None,
            until=_when(until, "until") if until else None,
            after=after,
            limit=limit + 1,
        )
        return make_page([e for e, _ in rows], limit, key=lambda e: e.seq)

    # ------------------------------------------------------------------ the ledger itself

    def verify_ledger(self) -> ChainReport:
        """Recompute the hash chain and check every signed checkpoint."""
        self._ready()
        stored = self._meta.public_key()
        if stored is None:
            raise Conflict("this registry has no signing key yet: run `modelledger init`")
        return verify_chain(self._meta.iter_events(), self._meta.checkpoints(), keyring(self._meta))

    def check_state(self) -> list[StateDifference]:
        """Compare the state tables with a replay of the ledger; empty when they match."""
        self._ready()
        return state_differences(self._meta, replay(e for e, _ in self._meta.iter_events()))

    def rebuild_state(self) -> list[StateDifference]:
        """Rewrite the state tables from the ledger; returns what was wrong before."""
        differences = self.check_state()
        self._meta.rewrite_state(replay(e for e, _ in self._meta.iter_events()))
        return differences

    def history(self, uri_or_name: str) -> list[LedgerEvent]:
        """Every ledger event about a model, a version (``models:/x/3``) or an alias (``models:/x@prod``)."""
        name, exact, prefixes = model_subjects(uri_or_name)
        self._ready()
        names = self._model_names(name)[1]  # a renamed model's events under its former names
        base = f"models:/{name}"
        exact = [f"models:/{n}{s[len(base) :]}" for s in exact for n in names]
        prefixes = [f"models:/{n}{p[len(base) :]}" for p in prefixes for n in names]
        return subject_history(self._meta, exact, prefixes)

    def ledger_head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the ledger's last event as its head row records it: one row read, cheap
        enough for a metrics scrape (``verify`` checks the row against the chain).

        >>> seq, digest = registry.ledger_head()  # doctest: +SKIP
        """
        self._ready()
        return self._meta.ledger_head()
