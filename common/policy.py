"""The risk policy: ``config/policy.toml`` loaded into ``quantum:policy:current`` by the governor.

One loader for everyone: while the key is absent (the governor has not run yet), apply_layer and
intent_bridge read the file through :func:`load_policy_file`, the same code the governor uses.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import ConfigurationError


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_open_positions: Annotated[int, Field(ge=0)] = 5
    max_margin_per_trade_usd: Annotated[Decimal, Field(gt=0)] = Decimal("500")
    max_total_notional_usd: Annotated[Decimal, Field(gt=0)] = Decimal("25000")
    max_leverage: Annotated[int, Field(ge=1, le=125)] = 20
    daily_loss_limit_pct: Annotated[Decimal, Field(gt=0, le=100)] = Decimal("5")
    max_drawdown_pct: Annotated[Decimal, Field(gt=0, le=100)] = Decimal("15")


class Policy(BaseModel):
    """The policy in force: the allowlist of symbols that may open positions, and the limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowlist: tuple[str, ...]
    limits: Limits = Limits()
    #: sha256 of the content (first 16 hex): a change of content is a new version
    version: str = ""
    updated_at: int = 0

    def with_version(self, updated_at: int) -> Policy:
        return self.model_copy(update={"version": self.content_hash(), "updated_at": updated_at})

    def content_hash(self) -> str:
        content = json.dumps({"allowlist": sorted(self.allowlist), "limits": self.limits.model_dump(mode="json")},
                             sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def to_hash(self) -> dict[str, str]:
        """The fields of ``quantum:policy:current``."""
        return {
            "version": self.version or self.content_hash(),
            "allowlist": json.dumps(list(self.allowlist), ensure_ascii=False),
            "limits": self.limits.model_dump_json(),
            "updated_at": str(self.updated_at),
        }

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> Policy:
        return cls(
            allowlist=tuple(json.loads(fields["allowlist"])),
            limits=Limits.model_validate_json(fields["limits"]),
            version=fields.get("version", ""),
            updated_at=int(fields.get("updated_at", "0")),
        )


def parse_policy(data: dict[str, Any], origin: str) -> Policy:
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"{origin}: {where}", first["msg"]) from None
    return policy.model_copy(update={"version": policy.content_hash()})


def load_policy_file(path: Path) -> Policy:
    """The policy of a toml file; ConfigurationError naming the field when it is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigurationError(str(path), str(e)) from None
    return parse_policy(data, str(path))
