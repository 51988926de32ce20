"""When the governor publishes ``config/policy.toml`` (pure).

The file is the baseline: it is published when no policy is in force, and whenever its content changes.
An operator's ``qt policy set`` stays in force until then — the governor does not revert it every check,
because it compares the file with the file version it last loaded (``file_version``), not with the
policy in force.
"""

from __future__ import annotations

from common.governance import PolicyRecord
from common.policy import Policy


def file_update_reason(file_policy: Policy, current: PolicyRecord | None) -> str | None:
    """Why the file's policy should be published now, or None."""
    if current is None:
        return "no policy in force"
    if current.file_version != file_policy.version:
        return "policy file changed"
    return None
