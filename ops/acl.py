"""Redis least privilege (``qt redis-acl``): an ACL file generated from the stream registry and the
key ownership below — one Redis user per service, a ``qt`` operator, an ``admin``, the default user off.

Each service user may
- read the streams it consumes through its group (XREADGROUP, XACK, XAUTOCLAIM, XPENDING, XINFO, group
  creation) and the streams it reads latest-only (XREAD, XREVRANGE, XRANGE),
- XADD only to the streams it produces and to the dead-letter streams of the streams it consumes,
- write only the keys it owns (:data:`KEY_OWNERS`) and its own heartbeat, and read the keys of
  :data:`KEY_READERS`.

Two dialects:

``6.2`` (the bundled server). Redis 6.2 grants commands and key patterns separately: a user may run
any of its commands on any of its keys. Per-key writes are made exact with the first-argument form
``+xadd|<key>`` (6.2 matches the first argument of any command, not only subcommands): XADD, and every
write of a service that owns only single keys (governor: the kill switch and the policy; trading_bot,
intent_bridge, ...: nothing but their heartbeat), is allowed on exactly the keys it owns. What 6.2
cannot express: a service that owns keys *by pattern* (``quantum:exit:state:*``) needs HSET/DEL in
general, and so may also write every key it may read — exitbrain can HSET a position hash it reads,
position_monitor the position and paper-exchange hashes, apply_layer the kill switch and the policy,
harvest_brain the position hashes. The heartbeat is exact per instance, so the instances must be named
when the file is generated (``--instance``, default this host's).

``7`` (Redis 7 and later) adds what 6.2 lacks: read-only key patterns (``%R~``) and selectors (a set
of commands bound to a set of keys), so each grant above holds exactly — a read of a key never allows
a write of it, and the heartbeat is ``quantum:heartbeat:<service>:*`` whatever the instance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from common import keys, streams
from common.streams import Service

Dialect = Literal["6.2", "7"]
OPERATOR = Service.QT
ADMIN = "admin"

#: a position hash and not a ledger:/snapshot: hash that shares the prefix (exchange symbols are
#: upper case, digits or CJK; they never begin with a lower-case l or s)
POSITION_KEYS = keys.position("[^ls]*")

_PAPER: tuple[str, ...] = (
    keys.paper_orders(), keys.paper_conditionals(), keys.paper_open_conditionals(), keys.paper_positions(),
    keys.paper_account(), keys.paper_leverage(), keys.paper_sequence(), keys.paper_fills("*"),
)

S = Service
#: the keys (or key patterns) each service writes; a key is owned by one service (the operator acts
#: through the governor's code on the kill switch and the policy)
KEY_OWNERS: dict[str, tuple[str, ...]] = {
    S.MARKETDATA: (keys.market_price("*"), keys.marketstate("*"), keys.exchange_symbols(),
                   keys.synthetic_market()),
    S.APPLY_LAYER: (POSITION_KEYS, keys.apply_plan("*"), keys.apply_fill("*"),
                    keys.apply_fill_cursor(), keys.apply_lease(), keys.cooldown("*"), *_PAPER),
    S.EXITBRAIN: (keys.exit_state("*"),),
    S.HARVEST_BRAIN: (keys.position_ledger("*"), keys.ledger_account(), keys.ledger_fill("*"),
                      keys.ledger_trade("*")),
    S.POSITION_MONITOR: (keys.position_snapshot("*"), keys.reconcile_drift("*")),
    S.GOVERNOR: (keys.policy_current(), keys.ess()),
    OPERATOR: (keys.policy_current(), keys.ess()),
}

#: the keys each service reads without writing them
KEY_READERS: dict[str, tuple[str, ...]] = {
    S.MARKETDATA: (),
    S.AI_ENGINE: (keys.marketstate("*"),),
    S.TRADING_BOT: (keys.marketstate("*"), keys.ledger_account(), keys.exchange_symbols(),
                    keys.market_price("*")),
    S.INTENT_BRIDGE: (keys.policy_current(), keys.ess(), keys.exchange_symbols(), POSITION_KEYS,
                      keys.ledger_account(), keys.market_price("*"), keys.cooldown("*")),
    S.GOVERNOR: (keys.ledger_account(), POSITION_KEYS, keys.exchange_symbols(), keys.market_price("*")),
    S.APPLY_LAYER: (keys.ess(), keys.policy_current(), keys.exchange_symbols(), keys.market_price("*"),
                    keys.reconcile_drift("*")),
    S.EXITBRAIN: (POSITION_KEYS, keys.market_price("*"), keys.marketstate("*"), keys.exchange_symbols()),
    S.HARVEST_PROPOSAL: (POSITION_KEYS, keys.market_price("*"), keys.exit_state("*"), keys.exchange_symbols()),
    S.HARVEST_BRAIN: (POSITION_KEYS, keys.exchange_symbols()),
    S.POSITION_MONITOR: (POSITION_KEYS, keys.market_price("*"), keys.exchange_symbols(), keys.position_ledger("*"),
                         keys.ledger_account(), *_PAPER),
}

#: streams a service reads latest-only besides the registry's ``readers`` (its HTTP queries)
EXTRA_LATEST: dict[str, tuple[str, ...]] = {
    S.POSITION_MONITOR: (keys.stream(streams.Stream.TRADE_CLOSED),),
}

CONNECTION: tuple[str, ...] = ("ping", "echo", "client|setname", "client|getname", "client|id")
TRANSACTION: tuple[str, ...] = ("multi", "exec", "discard", "unwatch")
CONSUME: tuple[str, ...] = ("xreadgroup", "xack", "xautoclaim", "xclaim", "xpending", "xgroup|create",
                            "xinfo|groups", "xinfo|stream", "xinfo|consumers", "xrange", "xlen")
LATEST: tuple[str, ...] = ("xread", "xrevrange", "xrange", "xlen", "xinfo|stream")
READ: tuple[str, ...] = ("hget", "hgetall", "hmget", "hexists", "hlen", "hkeys", "hscan", "exists", "get",
                         "mget", "type", "ttl", "pttl", "zrange", "zrangebyscore", "zrevrange",
                         "zrevrangebyscore", "zcard", "watch")
WRITE: tuple[str, ...] = ("hset", "hsetnx", "hdel", "hincrby", "hincrbyfloat", "del", "unlink", "set",
                          "expire", "pexpire", "persist", "incr", "incrby", "zadd", "zrem",
                          "zremrangebyrank", "zremrangebyscore")
#: the writes granted per exact key where 6.2 must name the key (what ``common.bus`` effects issue)
EXACT_WRITE: tuple[str, ...] = ("hset", "hdel", "hincrby", "del", "set", "expire", "pexpire")
HEARTBEAT: tuple[str, ...] = ("set", "del", "get")
OPERATOR_WRITES: tuple[str, ...] = ("xgroup|create", "xgroup|delconsumer", "xtrim", "info")


@dataclass(frozen=True)
class Grants:
    """What one service may touch, by Redis key (streams as their keys)."""

    user: str
    consumes: tuple[str, ...]
    latest: tuple[str, ...]
    produces: tuple[str, ...]
    owns: tuple[str, ...]
    reads: tuple[str, ...]

    @property
    def owns_patterns(self) -> bool:
        return any(_is_pattern(k) for k in self.owns)


def _is_pattern(key: str) -> bool:
    return any(c in key for c in "*?[")


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def grants(service: str) -> Grants:
    """The grants of ``service`` from the stream registry and the key tables."""
    consumed = streams.consumed_by(service)
    produced = [spec.key for spec in streams.produced_by(service) if spec.dead_letter_of is None]
    return Grants(
        user=service,
        consumes=_unique(spec.key for spec in consumed),
        latest=_unique([*(spec.key for spec in streams.all_streams() if service in spec.readers),
                        *EXTRA_LATEST.get(service, ())]),
        produces=_unique([*produced, *(spec.dlq.key for spec in consumed)]),
        owns=KEY_OWNERS.get(service, ()),
        reads=_unique(k for k in KEY_READERS.get(service, ()) if k not in KEY_OWNERS.get(service, ())),
    )


def password_hash(password: str) -> str:
    """The ``#<sha256>`` form of a password (the ACL file never holds a password in clear)."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def _login(user: str, passwords: Mapping[str, str]) -> list[str]:
    # "on" without a password (and without nopass): nobody can log in as the user until one is set
    secret = passwords.get(user)
    return ["on", password_hash(secret)] if secret else ["on"]


def _cmds(commands: Iterable[str]) -> list[str]:
    return ["+" + c for c in _unique(commands)]


def _keys(patterns: Iterable[str], mode: str = "~") -> list[str]:
    return [mode + p for p in _unique(patterns)]


def _first_arg(commands: Iterable[str], exact_keys: Iterable[str]) -> list[str]:
    return [f"+{c}|{k}" for k in _unique(exact_keys) for c in commands]


def _service_line_62(g: Grants, instances: tuple[str, ...]) -> list[str]:
    heartbeats = [keys.heartbeat(g.user, i) for i in instances]
    tokens = ["resetkeys", "-@all", *_cmds(CONNECTION), *_cmds(TRANSACTION)]
    if g.consumes:
        tokens += _cmds(CONSUME)
    if g.latest:
        tokens += _cmds(c for c in LATEST if not (g.consumes and c in CONSUME))
    if g.reads or g.owns:
        tokens += [*_cmds(READ), "+scan"]
    tokens += _first_arg(["xadd"], g.produces)
    if g.owns_patterns:
        tokens += _cmds(WRITE)  # 6.2: on every key of the user (see the module's docstring)
    else:
        tokens += _first_arg(EXACT_WRITE, g.owns)
        tokens += _first_arg([c for c in HEARTBEAT if c not in READ], heartbeats)
    tokens += _keys([*g.consumes, *g.latest, *g.produces, *g.owns, *g.reads, *heartbeats])
    return tokens


def _selector(patterns: Iterable[str], commands: Iterable[str], mode: str = "~") -> str:
    return "(" + " ".join(_keys(patterns, mode) + _cmds(commands)) + ")"


def _service_line_7(g: Grants) -> list[str]:
    tokens = ["resetkeys", "resetchannels", "-@all", *_cmds(CONNECTION), *_cmds(TRANSACTION), "+scan"]
    if g.consumes:
        tokens.append(_selector(g.consumes, CONSUME))
    if g.latest:
        tokens.append(_selector(g.latest, LATEST, "%R~"))
    if g.produces:
        tokens.append(_selector(g.produces, ["xadd"]))
    if g.reads:
        tokens.append(_selector(g.reads, READ, "%R~"))
    if g.owns:
        tokens.append(_selector(g.owns, [*READ, *WRITE]))
    tokens.append(_selector([keys.heartbeat(g.user, "*")], HEARTBEAT))
    return tokens


def _operator_tokens(dialect: Dialect) -> list[str]:
    """``qt``: reads everything of the fleet, publishes what the registry lets it (manual exit plans,
    kill-switch and policy events), trips and resets the kill switch and sets the policy, creates
    groups, prunes consumers and trims streams."""
    produced = [spec.key for spec in streams.produced_by(OPERATOR)]
    owned = KEY_OWNERS[OPERATOR]
    tokens = ["resetkeys", "-@all", "+@read", *_cmds(CONNECTION), *_cmds(TRANSACTION), "+watch",
              *_cmds(OPERATOR_WRITES)]
    if dialect == "6.2":
        tokens += _first_arg(["xadd"], produced) + _first_arg(EXACT_WRITE, owned) + _keys([keys.all_keys_pattern()])
    else:
        tokens[0:1] = ["resetkeys", "resetchannels"]
        tokens += _keys([keys.all_keys_pattern()], "%R~")
        tokens += [_selector(produced, ["xadd"]), _selector(owned, WRITE),
                   _selector([keys.stream("*")], ["xgroup|create", "xgroup|delconsumer", "xtrim"])]
    return tokens


def render(
    dialect: Dialect = "6.2",
    *,
    passwords: Mapping[str, str] | None = None,
    instances: Iterable[str] = (),
) -> str:
    """The ACL file (``aclfile`` / ``--aclfile``): one ``user`` line per service, ``qt``, ``admin``, and
    the default user off. ``passwords`` maps user -> password (stored hashed); a user without one is on
    but cannot log in. ``instances`` (6.2 only) names the heartbeat instances (``<host>[-<n>]``)."""
    passwords = passwords or {}
    hosts = tuple(instances)
    if dialect == "6.2" and not hosts:
        raise ValueError("Redis 6.2 needs the instance names of the heartbeat keys (--instance)")
    # an ACL file has no comments: Redis refuses any line that is not a ``user`` line
    lines = ["user default off resetpass resetkeys -@all"]
    for service in Service.ALL:
        g = grants(service)
        body = _service_line_62(g, hosts) if dialect == "6.2" else _service_line_7(g)
        lines.append(" ".join(["user", service, *_login(service, passwords), *body]))
    lines.append(" ".join(["user", OPERATOR, *_login(OPERATOR, passwords), *_operator_tokens(dialect)]))
    admin_channels = ["&*"]
    lines.append(" ".join(["user", ADMIN, *_login(ADMIN, passwords), "~*", *admin_channels, "+@all"]))
    return "\n".join(lines) + "\n"


def users() -> tuple[str, ...]:
    """Every user the file defines besides ``default``."""
    return (*Service.ALL, OPERATOR, ADMIN)
