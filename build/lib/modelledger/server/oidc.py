"""OpenID Connect bearer tokens: a JWT signed by a configured issuer stands for the enrolled
member that one of its claims names (``email`` by default).

A token is believed only after its signature checks against the issuer's published key set
(a JWKS, from an ``https://`` URL or a local file) with an asymmetric algorithm the key allows:
``alg: none`` and shared-secret (``HS*``) tokens are refused before any key is looked at, so
a public key can never be used as an HMAC secret. Then ``iss`` must be the configured issuer,
``aud`` must hold the configured audience, and ``exp``, ``nbf`` and ``iat`` must hold at the
server's clock, give or take a small leeway. The claim must name a member exactly as the
ledger enrols them (an ``email`` the token marks ``email_verified: false`` does not count),
with a key that is not revoked: the issuer says who someone is, the ledger
whether they belong here and what they may do.

The key set is cached for ``jwks_ttl`` seconds and read again once when a token names a key
it does not hold (an issuer rotating its keys), at most once per ``refetch_interval``, so a
stream of made-up key ids cannot make the server hammer the issuer. While the issuer cannot be
reached, the last key set read is kept (for up to an hour past its TTL).

>>> settings = OidcSettings("https://login.example.com", "modelledger", "https://login.example.com/jwks")
>>> app = create_app(registry, oidc=settings)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelledger import InvalidConfig, InvalidInput, InvalidToken, Member, Registry

__all__ = ["ALGORITHMS", "OidcSettings", "OidcVerifier", "looks_like_jwt"]

log = logging.getLogger("modelledger.server")

# The signature algorithms each kind of public key may verify; a JWK's own "alg" narrows them.
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP = {"Ed25519": "EdDSA", "Ed448": "EdDSA"}
ALGORITHMS = frozenset(_RSA | set(_EC.values()) | set(_OKP.values()))
"""Every algorithm a token may be signed with: public-key signatures only."""

# Three base64url parts; an unsigned token (alg none) has an empty third one.
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_JWKS_BYTES = 1024 * 1024
STALE_FOR = 3600.0
"""Seconds past its TTL that a key set is still used while the issuer cannot be reached."""


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the form of a JWT (API tokens, ``mlt_...``, have no dots)."""
    return _JWT.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class OidcSettings:
    """Which issuer's tokens the server accepts, and how it maps them to members.

    ``issuer`` must equal the tokens' ``iss``; ``audience`` must be in their ``aud``; ``jwks``
    is the issuer's key set, an ``https://`` URL (``http://`` only on loopback) or a file;
    ``claim`` names the member (``email``, or ``sub``, ``preferred_username``...); ``leeway``
    is the clock skew allowed on ``exp``/``nbf``/``iat``, in seconds. ``jwks_ttl``,
    ``refetch_interval`` and ``timeout`` (seconds) tune how a URL's key set is cached and read.

    >>> OidcSettings("https://accounts.google.com", "1234.apps.googleusercontent.com",
    ...              "https://www.googleapis.com/oauth2/v3/certs").claim
    'email'
    """

    issuer: str
    audience: str
    jwks: str
    claim: str = "email"
    leeway: float = 30.0
    jwks_ttl: float = 300.0
    refetch_interval: float = 10.0
    timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("issuer", "audience", "jwks", "claim"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidInput(f"the OIDC {name} must be a non-empty string, got {value!r}")
        for name in ("leeway", "jwks_ttl", "refetch_interval", "timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInput(f"the OIDC {name} must be a number of seconds, got {value!r}")
            if value < 0:
                raise InvalidInput(f"the OIDC {name} must not be negative, got {value!r}")
        if self.leeway > 300:
            raise InvalidInput(
                f"the OIDC leeway allows for clock skew and must be at most 300 seconds, got {self.leeway}"
            )
        if "://" in self.jwks:
            parts = urlsplit(self.jwks)
            plain_loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK
            # over plain HTTP anyone on the path could hand the server keys of their own
            if parts.scheme != "https" and not plain_loopback:
                raise InvalidInput(
                    f"the OIDC JWKS must be an https:// URL (http:// only on loopback) or a file, "
                    f"got {self.jwks}"
                )

    @property
    def jwks_url(self) -> str | None:
        """The key set's URL, or None when it is a file."""
        return self.jwks if "://" in self.jwks else None


@dataclass(frozen=True, slots=True)
class _Jwk:
    """One usable public key of the set: its id, what it may verify and the loaded key."""

    kid: str | None
    algorithms: frozenset[str]
    kty: str
    key: Any


@dataclass(frozen=True, slots=True)
class _Loaded:
    """The cache, replaced whole (so a reader never sees half of an update)."""

    keys: tuple[_Jwk, ...] = ()
    loaded_at: float | None = None  # time.monotonic() of the last read that worked
    tried_at: float | None = None  # of the last attempt, working or not
    failed: bool = False  # whether the last attempt failed


class _Unusable(Exception):
    """A key set that could not be read, or holds no key the server can use."""


def _algorithms(jwk: Mapping[str, Any]) -> frozenset[str]:
    """What the JWK may verify: none for a shared secret, an encryption key, a private key or
    a kind of key this server does not know."""
    if jwk.get("use", "sig") != "sig" or "d" in jwk:
        return frozenset()
    kty, crv = jwk.get("kty"), jwk.get("crv")
    allowed: frozenset[str]
    if kty == "RSA":
        allowed = _RSA
    elif kty == "EC" and crv in _EC:
        allowed = frozenset({_EC[crv]})
    elif kty == "OKP" and crv in _OKP:
        allowed = frozenset({_OKP[crv]})
    else:
        return frozenset()
    declared = jwk.get("alg")
    return allowed if declared is None else allowed & {declared}


def parse_jwks(data: bytes) -> tuple[_Jwk, ...]:
    """The usable public signing keys of a JWKS document; keys it cannot use are left out."""
    import jwt  # PyJWT: imported by a server configured for OIDC only, not at every start-up

    try:
        document = json.loads(data)
    except ValueError as exc:
        raise _Unusable(f"is not JSON ({exc})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise _Unusable('is not a JWKS: it needs a "keys" list')
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if "d" in entry:
            log.warning("the OIDC key set publishes a private key (kid %r): it is ignored", entry.get("kid"))
        algorithms = _algorithms(entry)
        kid = entry.get("kid")
        if not algorithms or not (kid is None or isinstance(kid, str)):
            continue
        try:
            key = jwt.PyJWK(entry, algorithm=min(algorithms)).key
        except jwt.PyJWTError as exc:
            log.warning("the OIDC key set's key %r cannot be loaded: %s", kid, exc)
            continue
        out.append(_Jwk(kid, algorithms, str(entry["kty"]), key))
    if not out:
        raise _Unusable("holds no public signing key (RSA, EC P-256/384/521, Ed25519 or Ed448)")
    return tuple(out)


class _KeySet:
    """The issuer's keys, read from the URL or file and cached; safe across worker threads."""

    def __init__(self, settings: OidcSettings) -> None:
        self._settings = settings
        self._state = _Loaded()
        self._lock = threading.Lock()  # held while reading the keys: one read at a time

    def find(self, kid: str | None, alg: str) -> Any:
        """The public key that checks a token with header ``kid`` and ``alg``."""
        state = self._fresh()
        found = _match(state.keys, kid, alg)
        if found is None and kid is not None:
            state = self._refetch(kid, alg)
            found = _match(state.keys, kid, alg)
        if found is None:
            if kid is None:
                raise InvalidToken("the token names no key (kid) and the issuer has several")
            raise InvalidToken(f"unknown key: the issuer's key set has no key {_show(kid)}")
        if alg not in found.algorithms:
            raise InvalidToken(
                f"the token is signed with {alg}, which key {_show(kid)} ({found.kty}) does not allow"
            )
        return found.key

    def load_now(self) -> int:
        with self._lock:
            try:
                keys = parse_jwks(self._read())
            except (_Unusable, OSError) as exc:
                problem = f"is not a usable OIDC key set: {exc}"
                raise InvalidConfig(self._settings.jwks, None, problem) from None
            now = time.monotonic()
            self._state = _Loaded(keys, now, now)
        return len(keys)

    def _due(self, state: _Loaded, now: float) -> bool:
        if state.tried_at is None:
            return True
        if state.failed:
            return now - state.tried_at >= self._settings.refetch_interval
        return state.loaded_at is None or now - state.loaded_at >= self._settings.jwks_ttl

    def _fresh(self) -> _Loaded:
        state = self._state
        if self._due(state, time.monotonic()):
            # With keys in hand a request does not wait for another one's read: it uses the
            # keys it has. Without any, it waits for that read.
            if self._lock.acquire(blocking=state.loaded_at is None):
                try:
                    if self._due(self._state, time.monotonic()):
                        self._load()
                finally:
                    self._lock.release()
            state = self._state
        if state.loaded_at is None:
            raise InvalidToken(
                "cannot check the token now: the issuer's keys could not be read (see the server log)"
            )
        if time.monotonic() - state.loaded_at > self._settings.jwks_ttl + STALE_FOR:
            raise InvalidToken(
                "cannot check the token now: the issuer's keys are out of date and could not be "
                "read again (see the server log)"
            )
        return state

    def _refetch(self, kid: str, alg: str) -> _Loaded:
        """The key set read again for a key id it lacks, unless it was read moments ago."""
        with self._lock:
            state = self._state
            recent = state.tried_at is not None and (
                time.monotonic() - state.tried_at < self._settings.refetch_interval
            )
            if _match(state.keys, kid, alg) is None and not recent:
                self._load()
        return self._state

    def _load(self) -> None:
        now = time.monotonic()
        source = self._settings.jwks
        try:
            keys = parse_jwks(self._read())
        except (_Unusable, OSError) as exc:
            log.warning("cannot read the OIDC key set %s: %s", source, exc)
            self._state = _Loaded(self._state.keys, self._state.loaded_at, now, failed=True)
            return
        self._state = _Loaded(keys, now, now)

    def _read(self) -> bytes:
        url = self._settings.jwks_url
        if url is None:
            return Path(self._settings.jwks).read_bytes()
        # httpx only for a key set read over HTTP: a server without OIDC, or with a key set in a
        # file, starts without importing it
        import httpx

        try:
            response = httpx.get(url, timeout=self._settings.timeout, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise _Unusable(str(exc)) from exc
        if response.status_code != 200:
            raise _Unusable(f"answered HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise _Unusable(f"is larger than {MAX_JWKS_BYTES} bytes")
        return response.content


def _match(keys: tuple[_Jwk, ...], kid: str | None, alg: str) -> _Jwk | None:
    """The key a token names: by id (one that allows ``alg`` if several share it), or the only
    key when the token names none."""
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    named = [k for k in keys if k.kid == kid]
    return next((k for k in named if alg in k.algorithms), named[0] if named else None)


def _show(value: Any) -> str:
    """A value from a token, quoted and cut short for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _seconds(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidToken(f"the token's {name} claim must be a number of seconds, got {_show(value)}")
    return float(value)


class OidcVerifier:
    """Checks bearer tokens of one issuer (:class:`OidcSettings`) and maps them to members.

    >>> verifier = OidcVerifier(settings)  # doctest: +SKIP
    >>> verifier.authenticate(token, registry).name  # doctest: +SKIP
    'bob@bank.example'
    """

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._keys = _KeySet(settings)

    def load_keys(self) -> int:
        """Read the issuer's key set now; the number of usable keys in it. Raises
        :class:`InvalidConfig` when it cannot be read or holds no usable key.

        >>> OidcVerifier(settings).load_keys()  # doctest: +SKIP
        2
        """
        return self._keys.load_now()

    def authenticate(self, token: str, registry: Registry) -> Member:
        """The enrolled member a token stands for; :class:`InvalidToken` says why not."""
        return self.member(self.verify(token), registry)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token whose signature, issuer, audience and times check out."""
        import jwt  # as in parse_jwks

        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
            # read before the signature is checked only to refuse early and say why
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise InvalidToken("malformed token: its header names no algorithm (alg)")
        if alg.lower() == "none":
            raise InvalidToken("unsigned tokens (alg none) are refused")
        if alg.upper().startswith("HS"):
            raise InvalidToken(
                f"tokens signed with a shared secret ({alg}) are refused: "
                "the issuer must sign with a private key"
            )
        if alg not in ALGORITHMS:
            accepted = ", ".join(sorted(ALGORITHMS))
            raise InvalidToken(f"unsupported signature algorithm {_show(alg)}: use one of {accepted}")
        issuer = unverified.get("iss")
        if issuer is None:
            raise InvalidToken("the token has no issuer (iss claim)")
        if issuer != settings.issuer:
            raise InvalidToken(
                f"wrong issuer: the token was issued by {_show(issuer)}, "
                f"this server accepts {settings.issuer}"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed token: its key id (kid) is not a string")
        key = self._keys.find(kid, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                # the times are checked below, with messages that say when
                options={
                    "require": ["exp", "iat", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken(
                f"bad signature: the token was not signed by the issuer's key {_show(kid)}"
            ) from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(
                f"wrong audience: the token is for {_show(unverified.get('aud'))}, "
                f"this server is {settings.audience}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        self._check_times(claims)
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now, leeway = time.time(), self.settings.leeway
        expires, not_before, issued = (_seconds(claims, name) for name in ("exp", "nbf", "iat"))
        if expires is not None and expires <= now - leeway:
            raise InvalidToken(f"the token expired at {_when(expires)}")
        if not_before is not None and not_before > now + leeway:
            raise InvalidToken(f"the token is not valid before {_when(not_before)}")
        if issued is not None and issued > now + leeway:
            raise InvalidToken(f"the token was issued in the future ({_when(issued)}): check the clocks")

    def member(self, claims: Mapping[str, Any], registry: Registry) -> Member:
        """The enrolled member the verified ``claims`` name, with a key that is not revoked."""
        claim = self.settings.claim
        name = claims.get(claim)
        if name is None:
            raise InvalidToken(f"the token has no {claim} claim, which names the member")
        if not isinstance(name, str) or not name:
            raise InvalidToken(f"the token's {claim} claim is not a member name: {_show(name)}")
        if claim == "email" and claims.get("email_verified") in (False, "false"):
            raise InvalidToken(f"the issuer has not verified the email {name}")
        member = next((m for m in registry.members() if m.name == name), None)
        if member is None:
            raise InvalidToken(f"{name} (the token's {claim}) is not an enrolled member")
        if not member.has_live_key:
            raise InvalidToken(f"{name} holds no key that is not revoked")
        return member
