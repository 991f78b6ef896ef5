"""The keys under which the server's layers leave facts about a request in its ASGI scope."""

from __future__ import annotations

__all__ = ["CACHE_UNTIL_SCOPE_KEY", "MEMBER_SCOPE_KEY", "ROUTE_SCOPE_KEY"]

MEMBER_SCOPE_KEY = "modelledger.member"
"""The name of the member who proved the request (for the access log)."""

ROUTE_SCOPE_KEY = "modelledger.route"
"""The template of the route that answers the request (set by the operations middleware)."""

CACHE_UNTIL_SCOPE_KEY = "modelledger.cache_until"
"""Set when an API token authenticated the request: the epoch second its token expires (the
read cache keeps an answer no longer). Absent for any other proof, whose answers are not kept."""
