"""Approval and alias policies: who may approve, and when machines may."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput

__all__ = ["Policy"]


@dataclass(frozen=True, slots=True)
class Policy:
    """The registry's governance policy. Changing it is itself a recorded event.

    - ``four_eyes``: the approver must differ from whoever registered the version
      (default on; turning it off is recorded with its reason).
    - ``approver_role``: when set, only actors holding this role in ``roles`` may approve.
    - ``auto_approve``: a version whose manifest asks for automatic approval and whose
      gates all pass is approved by the policy itself.
    - ``roles``: actor -> roles, for embedded registries (servers take roles from tokens).
    - ``protected_aliases``: aliases that, like ``production`` and ``rollback``, move only
      through deploy and rollback of an approved version.
    """

    four_eyes: bool = True
    approver_role: str | None = None
    auto_approve: bool = False
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    protected_aliases: tuple[str, ...] = ()

    def roles_of(self, actor: str) -> tuple[str, ...]:
        return tuple(self.roles.get(actor, ()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "four_eyes": self.four_eyes,
            "approver_role": self.approver_role,
            "auto_approve": self.auto_approve,
            "roles": {k: list(v) for k, v in sorted(self.roles.items())},
            **({"protected_aliases": list(self.protected_aliases)} if self.protected_aliases else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        known = {"four_eyes", "approver_role", "auto_approve", "roles", "protected_aliases"}
        unknown = set(data) - known
        if unknown:
            raise InvalidInput(f"unknown policy field(s): {', '.join(sorted(unknown))}")
        roles = data.get("roles") or {}
        if not isinstance(roles, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(r, str) for r in v)
            for k, v in roles.items()
        ):
            raise InvalidInput("policy roles must map actor names to lists of role names")
        for key in ("four_eyes", "auto_approve"):
            if key in data and not isinstance(data[key], bool):
                raise InvalidInput(f"policy field {key} must be true or false")
        role = data.get("approver_role")
        if role is not None and not isinstance(role, str):
            raise InvalidInput("policy field approver_role must be a string")
        protected = data.get("protected_aliases") or []
        if not isinstance(protected, (list, tuple)) or not all(isinstance(a, str) for a in protected):
            raise InvalidInput("policy field protected_aliases must be a list of alias names")
        return cls(
            protected_aliases=tuple(protected),
            four_eyes=bool(data.get("four_eyes", True)),
            approver_role=role,
            auto_approve=bool(data.get("auto_approve", False)),
            roles={k: tuple(v) for k, v in roles.items()},
        )
