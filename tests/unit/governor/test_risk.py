"""When the governor trips (pure): the daily-loss and drawdown limits of the policy, from the ledger."""

from __future__ import annotations

from decimal import Decimal

from common.governance import PolicyRecord
from common.maths.ledger import Account
from common.policy import Limits, Policy
from services.governor.policy_loader import file_update_reason
from services.governor.risk import DAILY_LOSS, DRAWDOWN, breach

D = Decimal
NOON = 1_767_268_800_000  # 2026-01-01T12:00:00Z
LIMITS = Limits(daily_loss_limit_pct=D("5"), max_drawdown_pct=D("15"))


def account(equity: str, peak: str = "10000", day_start: str = "10000", day: str = "2026-01-01") -> Account:
    e, p = D(equity), D(peak)
    return Account(equity=e, realized_pnl=e - D("10000"), fees=D(0), peak_equity=p, drawdown=(p - e) / p, day=day,
                   day_start_equity=D(day_start))


def test_no_ledger_no_breach() -> None:
    """Before the first fill there is no account and nothing to trip on."""
    assert breach(None, LIMITS, NOON) is None


def test_daily_loss_at_the_limit_trips() -> None:
    """9500 after a day started at 10000 is a 5 % loss: at the limit, it trips (>=); 9501 does not."""
    found = breach(account("9500"), LIMITS, NOON)
    assert found is not None and found.limit == DAILY_LOSS
    assert found.value_pct == D(5) and found.reason == "daily_loss 5.00% >= 5%"
    assert breach(account("9501"), LIMITS, NOON) is None


def test_drawdown_trips_when_the_day_is_fine() -> None:
    """Peak 12000, now 10100: a 15.83 % drawdown trips although today (started at 10300) lost under 5 %."""
    found = breach(account("10100", peak="12000", day_start="10300"), LIMITS, NOON)
    assert found is not None and found.limit == DRAWDOWN
    assert found.details() == {"limit": "drawdown", "value_pct": "15.83", "limit_pct": "15"}


def test_yesterdays_loss_does_not_count_today() -> None:
    """An account last booked yesterday with a 6 % loss has lost nothing today: no daily-loss breach."""
    assert breach(account("9400", day="2025-12-31"), LIMITS, NOON) is None
    assert breach(account("9400", day="2026-01-01"), LIMITS, NOON) is not None


def test_policy_file_is_published_when_absent_or_changed_only() -> None:
    """The file is published when no policy is in force or the file changed since it was last loaded —
    not when an operator's policy (another version) is in force over the same file."""
    file_policy = Policy(allowlist=("BTCUSDT",)).with_version(1)
    operator = Policy(allowlist=("BTCUSDT",), limits=Limits(max_open_positions=3)).with_version(2)
    assert file_update_reason(file_policy, None) == "no policy in force"
    assert file_update_reason(file_policy, PolicyRecord(operator, "qt", file_policy.version)) is None
    assert file_update_reason(file_policy, PolicyRecord(file_policy, "file", file_policy.version)) is None
    assert file_update_reason(file_policy, PolicyRecord(operator, "qt", "0123456789abcdef")) == "policy file changed"
