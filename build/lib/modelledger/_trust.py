"""Trust bundles: who may sign what, checkable offline, from the registry's root key alone.

A bundle holds the registry's root public key and, for every write that enrolled, re-keyed,
re-scoped or revoked a member, its ledger events and the signed checkpoint that closes them
(:class:`~modelledger._ledger.ChainSegment`). :func:`check_receipt_with_bundle` replays
those writes from the root: each must hash to its checkpoint, be signed by a key the
roster so far holds, and be allowed by the same rule the registry applies
(:func:`~modelledger._members.authorize`). It then checks that the receipt's key was a
serving key enrolled for the receipt's model and not revoked at the receipt's time, and the
receipt itself.

A bundle is as fresh as its export: a revocation made after it was exported is unknown to it,
as with any certificate revocation list. Export one after every change of members.

>>> bundle = registry.trust_bundle()  # doctest: +SKIP
>>> check_receipt_with_bundle(receipt, bundle, root_public_key=pinned_pem)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._keys import key_id, load_public_key
from ._ledger import ChainSegment, Checkpoint, LedgerEvent, check_segment
from ._members import MEMBER_ACTIONS, Roster, authorize_event, receipt_key_problem
from ._serving import Receipt, check_receipt
from .errors import IntegrityError, InvalidInput, InvalidReceipt
from .stores.protocols import LedgerStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "BUNDLE_TYPE",
    "check_receipt_with_bundle",
    "check_registration_with_bundle",
    "roster_from_bundle",
    "segment_to_dict",
    "trust_bundle",
]

BUNDLE_TYPE = "modelledger-trust-bundle/v1"


def trust_bundle(store: LedgerStore) -> dict[str, Any]:
    """The registry's trust bundle: its root key and the signed enrolment writes (JSON-ready)."""
    stored = store.public_key()
    if stored is None:
        raise InvalidInput("this registry has no root key yet: run `modelledger init`")
    return {
        "type": BUNDLE_TYPE,
        "root": {"key_id": stored[0], "public_key": bytes(stored[1]).decode()},
        "segments": [
            {
                "previous_hash": seg.previous_hash,
                "events": [{"event": e.to_dict(), "hash": h} for e, h in seg.events],
                "checkpoint": seg.checkpoint.to_dict(),
            }
            for seg in store.member_segments()
        ],
    }


def segment_to_dict(seg: ChainSegment) -> dict[str, Any]:
    """A chain segment as JSON values (the form a trust bundle holds its segments in)."""
    return {
        "previous_hash": seg.previous_hash,
        "events": [{"event": e.to_dict(), "hash": h} for e, h in seg.events],
        "checkpoint": seg.checkpoint.to_dict(),
    }


def _segment_from_dict(data: Mapping[str, Any]) -> ChainSegment:
    return ChainSegment(
        previous_hash=str(data["previous_hash"]),
        events=tuple((LedgerEvent.from_dict(e["event"]), str(e["hash"])) for e in data["events"]),
        checkpoint=Checkpoint.from_dict(data["checkpoint"]),
    )


def check_registration_with_bundle(
    proof: Mapping[str, Any], uri: str, digest: str, bundle: Mapping[str, Any]
) -> None:
    """Raise :class:`IntegrityError` unless ``proof`` (the chain segment holding a version's
    ``version.registered`` event, as ``Registry.registration_proof`` gives it) hashes to a
    checkpoint signed by a key the trust bundle proves, and that event records ``digest`` for
    version ``uri``. What a client of a server checks before trusting a version's file list."""
    roster, root_kid = roster_from_bundle(bundle)
    root = load_public_key(str(bundle["root"]["public_key"]).encode())

    def ring(kid: str) -> Ed25519PublicKey | None:
        pem = roster.public_pem(kid)
        if pem is not None:
            return load_public_key(pem)
        return root if kid == root_kid else None

    try:
        segment = _segment_from_dict(proof)
    except (KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(uri, f"its registration proof is malformed: {exc!r}") from exc
    if not segment.events:
        raise IntegrityError(uri, "its registration proof holds no event")
    check_segment(segment, ring)
    event = segment.events[0][0]
    number = uri.rsplit("/", 1)[-1]
    if event.action != "version.registered" or not event.subject.endswith(f"/{number}"):
        raise IntegrityError(uri, f"its registration proof is about {event.subject} ({event.action})")
    recorded = event.data.get("digest")
    if recorded != digest:
        raise IntegrityError(uri, f"digest {digest} is not the one registered in the ledger ({recorded})")


def roster_from_bundle(bundle: Mapping[str, Any], root_public_key: bytes | None = None) -> tuple[Roster, str]:
    """The roster a bundle proves, and the root key id; :class:`IntegrityError` when any write
    in it does not hash to its checkpoint, is signed by a key not yet trusted, or is not one
    its signer could make. ``root_public_key`` pins the root (else the bundle's own is used)."""
    try:
        if bundle.get("type") != BUNDLE_TYPE:
            raise InvalidInput(f"not a trust bundle (type {bundle.get('type')!r}, expected {BUNDLE_TYPE})")
        root_pem = str(bundle["root"]["public_key"]).encode()
        segments = [
            ChainSegment(
                previous_hash=str(s["previous_hash"]),
                events=tuple((LedgerEvent.from_dict(e["event"]), str(e["hash"])) for e in s["events"]),
                checkpoint=Checkpoint.from_dict(s["checkpoint"]),
            )
            for s in bundle["segments"]
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"malformed trust bundle: {exc!r}") from exc
    root_kid = key_id(root_pem)
    if root_public_key is not None and key_id(root_public_key) != root_kid:
        raise IntegrityError(
            "trust bundle", f"its root key is {root_kid}, not the pinned key {key_id(root_public_key)}"
        )
    roster = Roster()
    root = load_public_key(root_pem)

    def ring(kid: str) -> Ed25519PublicKey | None:
        pem = roster.public_pem(kid)
        if pem is not None:
            return load_public_key(pem)
        return root if kid == root_kid else None

    for seg in segments:
        check_segment(seg, ring)
        signer = seg.checkpoint.key_id
        for event, _hash in seg.events:
            if event.action not in MEMBER_ACTIONS:
                continue  # a link of the chain between enrolment events
            problem = authorize_event(roster, event, kid=signer, legacy_kid=root_kid, auto_approve=False)
            if problem is not None:
                raise IntegrityError(f"trust bundle event {event.seq}", problem)
            roster.apply(event.action, event.seq, event.time, event.data)
    return roster, root_kid


def check_receipt_with_bundle(
    receipt: Receipt | Mapping[str, Any], bundle: Mapping[str, Any], *, root_public_key: bytes | None = None
) -> Receipt:
    """Check a receipt offline against a trust bundle: its key was a serving key enrolled for
    its model and not revoked at its time, and it is genuine. Returns the receipt; raises
    :class:`InvalidReceipt` (with the reason) otherwise."""
    parsed = receipt if isinstance(receipt, Receipt) else Receipt.from_dict(receipt)
    try:
        roster, root_kid = roster_from_bundle(bundle, root_public_key)
    except IntegrityError as exc:
        raise InvalidReceipt(
            parsed.prediction_id, f"the trust bundle does not verify: {exc.message}"
        ) from exc
    problem = receipt_key_problem(roster, parsed.key_id, parsed.model, parsed.time, legacy_kid=root_kid)
    if problem is not None:
        raise InvalidReceipt(parsed.prediction_id, problem)
    pem = roster.public_pem(parsed.key_id) or (str(bundle["root"]["public_key"]).encode())
    check_receipt(parsed, pem)
    return parsed
