"""The generated parts of ``docs/`` and the checks of every Markdown page.

Generated: the wiring table (from the stream registry, :mod:`common.streams`), the stream contracts
(from the pydantic models of :mod:`common.contracts`), the key table (from :mod:`common.keys`, with the
writers of :data:`ops.acl.KEY_OWNERS`) and the ``qt`` command table (from the Typer app,
:mod:`ops.cli.app`). Each part lives in its Markdown file between ``<!-- <name>:begin ... -->`` and
``<!-- <name>:end -->``.

Checked, in ``README.md`` and ``docs/*.md``: every relative link resolves to a path in the repository
and, with an ``#anchor``, to a heading of that file (GitHub's anchor rules, :func:`github_anchor`); no
page points outside the repository's tree (``../``).

``python -m ops.docs`` rewrites every generated part; ``python -m ops.docs --check`` exits 1 naming the
parts that differ from the code and the links that do not resolve (``tests/ops/test_docs.py`` runs the
same checks). Everything is read from the code and ``config/default.toml`` — not from the environment —
so the output is the same on every machine.
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import re
import sys
import tomllib
import types
import typing
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import annotated_types
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo

from common import keys, streams
from common.books import SymbolLedger, account_to_hash, ledger_to_hash
from common.config import DEFAULT_CONFIG_DIR, REPO_ROOT
from common.contracts import base, enums
from common.contracts import messages as m
from common.contracts.base import Message
from common.ess import armed
from common.exchange.rules import load_rules_file
from common.market import price_mapping
from common.maths.ledger import LedgerPosition, new_account
from common.policy import Policy
from common.positions import PositionRecord
from common.streams import Service, StreamSpec
from ops.acl import KEY_OWNERS

# --- Markdown helpers -----------------------------------------------------------------------------


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(items: Iterable[str], empty: str = "—") -> str:
    values = list(items)
    return ", ".join(values) if values else empty


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


# --- the wiring table ------------------------------------------------------------------------------


def _default_ports() -> tuple[dict[str, int], dict[str, int]]:
    """(metrics port, HTTP port) by service, as ``config/default.toml`` sets them."""
    data = tomllib.loads((DEFAULT_CONFIG_DIR / "default.toml").read_text(encoding="utf-8"))
    return dict(data["runtime"]["metrics_ports"]), dict(data["http"]["ports"])


def _owned_keys(service: str) -> list[str]:
    """The keys ``service`` writes (the ACL's key ownership), the paper exchange's book as one entry."""
    owned = KEY_OWNERS.get(service, ())
    paper = f"{keys.PREFIX}:paper:"
    shown = [_code(k) for k in owned if not k.startswith(paper)]
    if any(k.startswith(paper) for k in owned):
        shown.append(_code(paper + "*") + " (the paper exchange)")
    return shown


def wiring_table() -> str:
    """The wiring as Markdown: every stream with its contract, producers, groups, latest-only readers,
    MAXLEN and dead-letter stream; the dead-letter streams; and every service with what it consumes,
    reads, publishes and writes, and its ports."""
    base_specs = [s for s in streams.all_streams() if s.dead_letter_of is None]
    dead = [s for s in streams.all_streams() if s.dead_letter_of is not None]
    lines = ["### Streams", "",
             "Every key is `quantum:stream:<stream>`. Grouped streams are read through a consumer group named "
             "after the consuming service and acknowledged; latest-only streams are read with plain `XREAD`.",
             ""]
    lines += _table(
        ("stream", "contract", "produced by", "consumer groups", "read latest-only by", "MAXLEN ~", "dead letters"),
        ((_code(s.name), s.contract.__name__, _cell(s.producers), _cell(s.groups), _cell(s.readers),
          f"{s.maxlen:,}", _code(s.dlq.name) if s.grouped else "—") for s in base_specs))
    lines += ["", "### Dead-letter streams", "",
              "Written by the bus runtime of the consuming service, never read by a service: an operator's.", ""]
    lines += _table(("stream", "contract", "dead letters of", "written by", "MAXLEN ~"),
                    ((_code(s.name), s.contract.__name__, _code(s.dead_letter_of or ""), _cell(s.producers),
                      f"{s.maxlen:,}") for s in dead))
    metrics_ports, http_ports = _default_ports()
    lines += ["", "### Services", "",
              "A service that consumes a stream may also write that stream's dead-letter stream (not repeated "
              "below). Keys written are those the generated Redis ACL lets the service write (`ops/acl.py`); "
              "every service also writes its own heartbeat. Ports are the defaults of `config/default.toml`: "
              "an HTTP service serves `/metrics` on its HTTP port.", ""]
    rows = []
    for service in (*Service.ALL, Service.QT):
        consumes = [f"{_code(s.name)} → {service}" for s in streams.consumed_by(service)]
        latest = [_code(s.name) for s in streams.all_streams() if service in s.readers]
        produces = [_code(s.name) for s in streams.produced_by(service) if s.dead_letter_of is None]
        http = http_ports.get(service)
        metrics = metrics_ports.get(service)
        rows.append((service if service != Service.QT else "qt (operator)", _cell(consumes), _cell(latest),
                     _cell(produces), _cell(_owned_keys(service)), str(http) if http else "—",
                     str(metrics) if metrics else (str(http) if http else "—")))
    lines += _table(("service", "consumes (stream → group)", "reads latest-only", "publishes", "writes keys",
                     "HTTP port", "metrics port"), rows)
    return "\n".join(lines) + "\n"


# --- the contracts ---------------------------------------------------------------------------------

#: the named field types of the contracts, as the models spell them
ALIASES: dict[str, object] = {
    "TraceId": base.TraceId, "HexId": base.HexId, "Symbol": base.Symbol, "Price": base.Price,
    "Quantity": base.Quantity, "Money": base.Money, "EpochMs": base.EpochMs, "Fraction": base.Fraction,
    "Leverage": m.Leverage, "Score": m.Score, "Text": m.Text, "Code": m.Code,
}
ENUMS: tuple[type[Enum], ...] = (enums.Side, enums.PositionSide, enums.Action, enums.Decision, enums.ExitReason,
                                 enums.FillKind, enums.HarvestStage, enums.ReconcileKind)
_BASE_NAMES = {Decimal: "decimal", int: "integer", float: "float", bool: "boolean", str: "string"}


def _constraint(item: object) -> list[str]:
    """One metadata item of a type as words (``> 0``, ``length ≤ 512``, ``pattern ...``)."""
    if isinstance(item, FieldInfo):
        return [c for sub in item.metadata for c in _constraint(sub)]
    if isinstance(item, StringConstraints):
        out = []
        if item.min_length is not None and item.max_length is not None:
            out.append(f"length {item.min_length}–{item.max_length}")
        elif item.max_length is not None:
            out.append(f"length ≤ {item.max_length}")
        elif item.min_length is not None:
            out.append(f"length ≥ {item.min_length}")
        if item.pattern is not None:
            out.append(f"pattern {_code(str(item.pattern))}")
        return out
    bounds = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥"), (annotated_types.Lt, "lt", "<"),
              (annotated_types.Le, "le", "≤"))
    for kind, attr, sign in bounds:
        if isinstance(item, kind):
            return [f"{sign} {getattr(item, attr)}"]
    if isinstance(item, annotated_types.MaxLen):
        return [f"length ≤ {item.max_length}"]
    if isinstance(item, annotated_types.MinLen):
        return [f"length ≥ {item.min_length}"]
    return []  # allow_inf_nan=False: every number of a contract is finite anyway


def describe(tp: object, metadata: Sequence[object] = ()) -> str:
    """A field type in words: its base type or enum or model, and its constraints."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(tp)
        return describe(inner, [*metadata, *extra])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(describe(a, metadata) for a in args)
    if origin is typing.Literal:
        return "literal " + ", ".join(_code(str(a.value if isinstance(a, Enum) else a)) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"JSON list of {describe(item)}"
    if origin is dict:
        _, value = typing.get_args(tp)
        return "JSON object of strings" if value is str else "JSON object"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp.__name__
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.__name__
    name = _BASE_NAMES.get(tp, getattr(tp, "__name__", str(tp))) if isinstance(tp, type) else str(tp)
    words = [c for item in metadata for c in _constraint(item)]
    return name + (" " + ", ".join(words) if words else "")


def _raw_annotation(model: type[BaseModel], field: str) -> str:
    """The annotation of ``field`` as the source spells it (the models use postponed annotations)."""
    for klass in model.__mro__:
        raw = getattr(klass, "__annotations__", {}).get(field)
        if raw is not None:
            return raw if isinstance(raw, str) else getattr(raw, "__name__", str(raw))
    return ""


def field_type(model: type[BaseModel], field: str) -> str:
    """The named type of a field when the model uses one (``Price``), else the type in words."""
    raw = _raw_annotation(model, field).removesuffix(" | None").strip()
    if raw in ALIASES:
        return raw
    info = model.model_fields[field]
    return describe(info.annotation, info.metadata)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        made = info.default_factory()  # type: ignore[call-arg]  # the contracts' factories take no argument
        return "now (epoch ms)" if isinstance(made, int) else _code(repr(made))
    value = info.default
    if isinstance(value, bool):
        return _code("true" if value else "false")
    if isinstance(value, Enum):
        return _code(str(value.value))
    if isinstance(value, str):
        return _code(f'"{value}"')
    return _code(str(value))


def _required(info: FieldInfo) -> str:
    if info.is_required():
        return "yes"
    if info.default is None and info.default_factory is None:
        return "no (left out when absent)"
    return f"no (default {_default(info)})"


def _apply_plan_notes() -> dict[str, list[str]]:
    """Which actions require which fields of ``apply.plan`` (the model's own table)."""
    notes: dict[str, list[str]] = {}
    for action, fields in m._REQUIRED_BY_ACTION.items():
        for name in fields:
            notes.setdefault(name, []).append(_code(action.value))
    required = {name: ["required for " + ", ".join(acts)] for name, acts in notes.items()}
    for name in m._KILL_FIELDS:
        required.setdefault(name, []).append("required for a `kill_score` exit")
    return required


def _field_rows(model: type[BaseModel], skip: Iterable[str] = ()) -> list[tuple[str, ...]]:
    skipped = set(skip)
    json_fields: frozenset[str] = getattr(model, "JSON_FIELDS", frozenset())
    extra = _apply_plan_notes() if model is m.ApplyPlan else {}
    rows: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        if name in skipped:
            continue
        notes = list(extra.get(name, []))
        if name in json_fields:
            notes.insert(0, "a JSON string on the wire")
        rows.append((_code(name), field_type(model, name), _required(info), "; ".join(notes)))
    return rows


def _streams_of(contract: type[Message]) -> list[StreamSpec]:
    return [s for s in streams.all_streams() if s.contract is contract]


def _first_line(obj: object) -> str:
    """The first line of a docstring, its reST literals as Markdown code."""
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0].replace("``", "`") if doc else ""


def contract_tables() -> str:
    """Every contract as Markdown: the envelope, the named types and enumerations, then one table per
    contract (with the streams that carry it) listing its fields, their types and whether required."""
    envelope = list(Message.model_fields)
    lines = ["### The envelope", "", "Every entry of every stream carries these fields (class `Message`).", ""]
    lines += _table(("field", "type", "required", "notes"), _field_rows(Message))
    lines += ["", "### Named types", ""]
    lines += _table(("type", "meaning"), ((name, describe(tp)) for name, tp in ALIASES.items()))
    lines += ["", "### Enumerations", "", "On the wire an enumeration is its value.", ""]
    lines += _table(("enumeration", "values"),
                    ((e.__name__, ", ".join(_code(str(v.value)) for v in e)) for e in ENUMS))
    seen: list[type[Message]] = []
    for spec in streams.all_streams():
        if spec.contract not in seen:
            seen.append(spec.contract)
    for contract in seen:
        carried = _streams_of(contract)
        names = [s.name for s in carried if s.dead_letter_of is None]
        title = ", ".join(names) if names else "Dead letters"
        lines += ["", f"### {title} ({contract.__name__})", ""]
        doc = _first_line(contract)
        if doc:
            lines += [doc, ""]
        if contract is m.DeadLetter:
            lines += ["Carried by " + ", ".join(_code(s.name) for s in carried) + ".", ""]
        lines += _table(("field", "type", "required", "notes"), _field_rows(contract, skip=envelope))
        if contract is m.ApplyPlan:
            lines += ["", f"#### steps ({m.PlanStep.__name__})", "", _first_line(m.PlanStep), ""]
            lines += _table(("field", "type", "required", "notes"), _field_rows(m.PlanStep))
    return "\n".join(lines) + "\n"


# --- the keys --------------------------------------------------------------------------------------

#: sample arguments that make a key function build a real-looking key (matched against the ACL owners)
_SAMPLES = {"symbol": "BTCUSDT", "plan_id": "0123456789abcdef", "fill_id": "paper-1", "service": "governor",
            "instance": "host", "name": "trade.intent"}
#: key functions that are not keys of their own (stream keys live in the wiring table; patterns and parsers)
_NOT_KEYS = frozenset({"stream", "dlq_stream", "stream_name", "tail", "symbol_of_position_key"})


@dataclass(frozen=True)
class KeyDoc:
    """What a key is: its Redis type, what it holds, and when it expires."""

    type: str
    holds: str
    ttl: str = "—"
    #: the fields of a hash (or of the JSON it holds), from its codec (None: see ``holds``)
    fields: Callable[[], Iterable[str]] | None = None
    fields_label: str = "Fields"


def _position_fields() -> list[str]:
    sample = PositionRecord("BTCUSDT", enums.PositionSide.LONG, Decimal(1), Decimal(1), 1, None, None, "0" * 16,
                            0, 0, "")
    return list(sample.to_hash())


def _exit_state_fields() -> list[str]:
    from services.exitbrain.exit_state import ExitState

    return list(ExitState("0" * 16, 0, Decimal(1), Decimal(1), None, 0.0, 0.0).to_hash())


def _trade_fields() -> list[str]:
    from services.harvest_brain.books import trade_to_hash

    # the open trade's type as the codec names it (wherever harvest_brain defines it)
    open_trade = typing.get_type_hints(trade_to_hash)["trade"]
    opened = LedgerPosition(enums.PositionSide.LONG, Decimal(1), Decimal(1), Decimal(0), Decimal(0), 0, Decimal(1),
                            Decimal(0), Decimal(0), Decimal(1))
    return list(trade_to_hash(open_trade(opened, "0" * 16, "0" * 16), 0))


def _snapshot_fields() -> list[str]:
    from common.exchange.base import ExchangePosition
    from services.position_monitor.snapshot import Snapshot

    zero = Decimal(0)
    return list(Snapshot(ExchangePosition("BTCUSDT", zero, zero, zero, zero, 1, zero), 0, "").to_hash())


def _plan_record_fields() -> list[str]:
    from services.apply_layer.records import done

    return [*done("0" * 16, enums.Decision.EXECUTE, ttl_s=60).mapping, "plan"]


def _rules_fields() -> list[str]:
    import json

    rules = load_rules_file(DEFAULT_CONFIG_DIR / "paper_symbols.json")
    return list(json.loads(next(iter(rules.values())).to_json()))


KEY_DOCS: dict[str, KeyDoc] = {
    "position": KeyDoc("hash", "The one position of the symbol: side, quantity, average entry, leverage, the "
                       "stop and target it was opened with, its entry plan (`plan_id`, which exits must name), "
                       "the ids of its protective orders and why the stop sits where it does. Deleted on a "
                       "full close.", fields=_position_fields),
    "position_ledger": KeyDoc("hash", "The symbol's books over every fill and closed trade.",
                              fields=lambda: ledger_to_hash(SymbolLedger())),
    "ledger_account": KeyDoc("hash", "The account as harvest_brain books it (`drawdown` a fraction of the peak, "
                             "`day` the UTC date `day_start_equity` belongs to).",
                             fields=lambda: account_to_hash(new_account(Decimal(1), 0), 0)),
    "ledger_fill": KeyDoc("string", "Marker that harvest_brain booked this fill (its value: when).", "30 days"),
    "ledger_trade": KeyDoc("hash", "harvest_brain's open trade of the symbol (entry and exit notionals for the "
                           "VWAPs, fees, the entry plan); deleted when the trade closes.", fields=_trade_fields),
    "position_snapshot": KeyDoc("hash", "position_monitor's latest view of the exchange's position of the symbol "
                                "(`position_amt` signed).", "10 snapshot intervals, at least 60 s",
                                fields=_snapshot_fields),
    "exit_state": KeyDoc("hash", "exitbrain's memory of the open position (ladder stage, best price, the stop in "
                         "force and the one last asked for, market at entry, closes in flight); started afresh "
                         "when `position_plan_id` changes.", fields=_exit_state_fields),
    "apply_plan": KeyDoc("hash", "The execution record of a plan: `SUBMITTING` (written before the order is sent, "
                         "with the plan itself in `plan`) or `DONE` (written in the commit, without `plan`).",
                         "`apply.record_ttl_s` (7 days)", fields=_plan_record_fields),
    "reconcile_drift": KeyDoc("hash", "An open drift of the symbol, confirmed by position_monitor; apply_layer "
                              "refuses entries while it exists. Deleted when the drift is resolved.",
                              fields=lambda: ["kind", "redis_qty", "exchange_qty", "since"]),
    "apply_lease": KeyDoc("string", "The active apply_layer's lease: `<consumer name>/<pid>/<random>`.",
                          "`apply.lease_ttl_ms` (15 s), renewed every third of it"),
    "cooldown": KeyDoc("string", "The entry plan that opened or added to the symbol last; no new entry while it "
                       "exists.", "`apply.cooldown_s` (900 s)"),
    "ess": KeyDoc("hash", "The one kill switch (`state` ARMED or TRIPPED; absent counts as ARMED, an unreadable "
                  "state as TRIPPED).", fields=lambda: armed("x").to_hash()),
    "policy_current": KeyDoc("hash", "The policy in force (`allowlist` and `limits` as JSON), where it came from "
                             "(`origin`: `file` or `qt`) and the policy file's version the governor last "
                             "loaded.", fields=lambda: [*Policy(allowlist=()).to_hash(), "origin", "file_version"]),
    "market_price": KeyDoc("hash", "The symbol's latest trade and mark price, stamped with the wall clock.",
                           fields=lambda: price_mapping(Decimal(1), Decimal(1), 0)),
    "marketstate": KeyDoc("hash", "The symbol's latest market state: the `marketstate` contract's fields, "
                          "envelope included.", fields=lambda: m.MarketState.model_fields),
    "exchange_symbols": KeyDoc("hash", "Symbol → JSON of its trading rules, replaced whole on every refresh.",
                               fields=_rules_fields, fields_label="JSON fields"),
    "synthetic_market": KeyDoc("string", "JSON of where the synthetic market stands (its clock, each symbol's "
                               "price, regime and ticks to its next jump), saved every second and at stop: "
                               "a restart of marketdata resumes there."),
    "paper_orders": KeyDoc("hash", "The paper exchange: client order id → JSON order with its fills."),
    "paper_conditionals": KeyDoc("hash", "The paper exchange: client algo id → JSON conditional order, any status."),
    "paper_open_conditionals": KeyDoc("hash", "The paper exchange: client algo id → symbol, of the open "
                                      "conditional orders."),
    "paper_positions": KeyDoc("hash", "The paper exchange: symbol → JSON position (signed quantity, entry, "
                              "leverage, realized PnL)."),
    "paper_account": KeyDoc("hash", "The paper exchange's wallet.",
                            fields=lambda: ["wallet_balance", "fees", "realized_pnl", "updated_at"]),
    "paper_leverage": KeyDoc("hash", "The paper exchange: symbol → leverage set."),
    "paper_sequence": KeyDoc("string", "The paper exchange's counter behind order, algo and fill ids."),
    "paper_fills": KeyDoc("sorted set", "The paper exchange's fills of the symbol (JSON, scored by fill time), "
                          "the newest kept."),
    "heartbeat": KeyDoc("string", "The liveness of one service instance: JSON with `pid`, `boot_id`, "
                        "`start_ticks`, `started_at`, `ts`, `consumer`, `healthy`. Deleted on a clean stop.",
                        "`runtime.heartbeat_ttl_s` (20 s), refreshed every `runtime.heartbeat_interval_s` (5 s)"),
    "apply_fill": KeyDoc("string", "Marker that apply_layer published this fill's `execution.result` (its value: "
                         "the plan or protective order it came from).", "`apply.record_ttl_s` (7 days)"),
    "apply_fill_cursor": KeyDoc("hash", "Symbol → epoch ms of the last exchange fill apply_layer booked (where "
                                "the polling fallback starts)."),
}


def key_functions() -> dict[str, Callable[..., str]]:
    """The functions of :mod:`common.keys` that build one key (not patterns, parsers or stream keys)."""
    found: dict[str, Callable[..., str]] = {}
    for name, fn in inspect.getmembers(keys, inspect.isfunction):
        if fn.__module__ != keys.__name__ or name.startswith("_") or name in _NOT_KEYS:
            continue
        if name.endswith("_pattern"):
            continue
        found[name] = fn
    return found


def _writers(sample: str, name: str) -> str:
    if name == "heartbeat":
        return "every service (its own)"
    owners = [service for service, patterns in KEY_OWNERS.items()
              if any(fnmatch.fnmatchcase(sample, p.replace("[^", "[!")) for p in patterns)]
    return _cell("qt (operator)" if o == Service.QT else o for o in owners)


def key_table() -> str:
    """Every key of :mod:`common.keys` as Markdown: its name, type, writers, what it holds (with a hash's
    fields from its codec) and its expiry. KeyError names a key function without a :data:`KEY_DOCS` entry."""
    rows = []
    for name, fn in sorted(key_functions().items(), key=lambda item: _order(item[0])):
        if name not in KEY_DOCS:
            raise KeyError(f"common.keys.{name} has no entry in ops.docs.KEY_DOCS: say what the key holds")
        doc = KEY_DOCS[name]
        params = list(inspect.signature(fn).parameters)
        pattern = fn(*(f"{{{p}}}" for p in params))
        sample = fn(*(_SAMPLES.get(p, "x") for p in params))
        holds = doc.holds
        if doc.fields is not None:
            holds += f" {doc.fields_label}: " + ", ".join(_code(f) for f in doc.fields()) + "."
        rows.append((_code(pattern), doc.type, _writers(sample, name), holds, doc.ttl))
    unknown = sorted(set(KEY_DOCS) - set(key_functions()))
    if unknown:
        raise KeyError(f"ops.docs.KEY_DOCS names keys common.keys does not build: {unknown}")
    return "\n".join(_table(("key", "type", "written by", "holds", "expires"), rows)) + "\n"


def _order(name: str) -> int:
    """Keys in the order of :data:`KEY_DOCS` (which follows common/keys.py)."""
    return list(KEY_DOCS).index(name) if name in KEY_DOCS else len(KEY_DOCS)


# --- the qt commands -------------------------------------------------------------------------------


def _help_text(command: Any) -> str:
    """The first paragraph of a command's help, on one line, reST literals as Markdown code."""
    callback = getattr(command, "callback", None)
    doc = inspect.getdoc(callback) if callback is not None and getattr(command, "commands", None) is not None else None
    text = inspect.cleandoc(doc or command.help or "")
    first = text.split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")


def _default_text(value: object) -> str:
    """A default as the table shows it; empty for one not worth showing (none, false, zero, empty)."""
    if value is None or value is False or value == 0 or value in ("", [], ()):
        return ""
    if value is True:
        return "on"
    if isinstance(value, Path):
        return str(value.relative_to(REPO_ROOT)) if value.is_relative_to(REPO_ROOT) else str(value)
    return str(value)


def _params_text(command: Any) -> str:
    parts = []
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        flag = "/".join([max(param.opts, key=len), *param.secondary_opts])
        if param.required:
            parts.append(f"{_code(flag)} (required)")
            continue
        default = "" if getattr(param, "is_flag", False) and not param.secondary_opts else _default_text(
            param.default)
        parts.append(_code(flag) + (f" ({default})" if default else ""))
    return ", ".join(parts) or "—"


def _usage(path: Sequence[str], command: Any) -> str:
    args = [p.name.upper() if p.required else f"[{p.name.upper()}]" for p in command.params
            if p.param_type_name == "argument"]
    return _code(" ".join(["qt", *path, *args]))


def command_table() -> str:
    """Every ``qt`` command as Markdown: how it is called, what its help says, its options and defaults
    (from the Typer app itself, so the table is what ``qt --help`` shows)."""
    import typer  # only here: the other parts do not need the CLI

    from ops.cli.app import app

    rows: list[tuple[str, str, str]] = []

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is None or (path and getattr(command, "invoke_without_command", False)):
            rows.append((_usage(path, command), _help_text(command), _params_text(command)))
        for name, sub in (subcommands or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return "\n".join(_table(("command", "what it does", "options (default)"), rows)) + "\n"


# --- the blocks in the Markdown files --------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One generated part of a Markdown file."""

    name: str
    path: str
    render: Callable[[], str]


BLOCKS: tuple[Block, ...] = (
    Block("wiring", "docs/wiring.md", wiring_table),
    Block("contracts", "docs/contracts.md", contract_tables),
    Block("keys", "docs/contracts.md", key_table),
    Block("commands", "docs/operations.md", command_table),
)
REGENERATE = "python -m ops.docs"


def markers(name: str) -> tuple[str, str]:
    return (f"<!-- {name}:begin (generated by `{REGENERATE}`: do not edit by hand) -->", f"<!-- {name}:end -->")


def extract(text: str, name: str) -> str:
    """The text between the markers of block ``name``; ValueError when they are missing."""
    begin, end = markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no {begin!r} ... {end!r} in the file")
    return text[start + len(begin):stop].strip("\n") + "\n"


def splice(text: str, name: str, body: str) -> str:
    """``text`` with block ``name`` replaced by ``body``; ValueError when its markers are missing."""
    begin, end = markers(name)
    extract(text, name)
    start, stop = text.find(begin), text.find(end)
    return text[:start + len(begin)] + "\n\n" + body.strip("\n") + "\n\n" + text[stop:]


def stale(root: Path = REPO_ROOT) -> list[str]:
    """The blocks whose text in their file differs from what the code gives (``path#name``)."""
    found = []
    for block in BLOCKS:
        path = root / block.path
        try:
            current = extract(path.read_text(encoding="utf-8"), block.name)
        except (OSError, ValueError):
            found.append(f"{block.path}#{block.name}")
            continue
        if current.strip("\n") != block.render().strip("\n"):
            found.append(f"{block.path}#{block.name}")
    return found


def write(root: Path = REPO_ROOT) -> list[str]:
    """Rewrite every block in its file; the blocks that changed (``path#name``)."""
    changed = []
    for block in BLOCKS:
        path = root / block.path
        text = path.read_text(encoding="utf-8")
        updated = splice(text, block.name, block.render())
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(f"{block.path}#{block.name}")
    return changed


# --- the links of the Markdown pages ---------------------------------------------------------------

#: the pages whose links are checked (relative to the repository)
PAGES = ("README.md", "docs/*.md")
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$", re.M)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def pages(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and every page of docs/."""
    found: list[Path] = []
    for pattern in PAGES:
        found.extend(sorted(root.glob(pattern)))
    return [p for p in found if p.is_file()]


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans (their brackets are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (links and code marks dropped) in lower case, every
    character that is not a letter, digit, mark, space, ``-`` or ``_`` dropped, spaces made ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of every heading of a page; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", text)):
        slug = github_anchor(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str) -> list[str]:
    """The targets of every inline link, image and reference definition outside code."""
    prose = _prose(text)
    return [m.group(1) for m in _INLINE_LINK.finditer(prose)] + [m.group(1) for m in _REFERENCE.finditer(prose)]


def link_problem(page: Path, target: str, root: Path = REPO_ROOT) -> str | None:
    """Why ``target`` (a link of ``page``) does not resolve inside the repository, or None when it does.
    Absolute URLs (``https:``, ``mailto:``) are not followed."""
    if not target or target.startswith("//") or _SCHEME.match(target):
        return None
    raw_path, _, anchor = target.partition("#")
    path = page if not raw_path else (page.parent / unquote(raw_path))
    resolved = path.resolve()
    base = root.resolve()
    if resolved != base and base not in resolved.parents:
        return "points outside the repository"
    if not resolved.exists():
        return "no such file in the repository"
    if not anchor:
        return None
    if resolved.is_dir() or resolved.suffix.lower() != ".md":
        return "an anchor into a file that is not Markdown"
    if unquote(anchor) not in anchors(resolved.read_text(encoding="utf-8")):
        return f"no heading with the anchor #{anchor} in {resolved.relative_to(base)}"
    return None


def broken_links(root: Path = REPO_ROOT) -> list[str]:
    """Every link of :func:`pages` that does not resolve (``page: target: why``)."""
    found = []
    for page in pages(root):
        for target in links(page.read_text(encoding="utf-8")):
            problem = link_problem(page, target, root)
            if problem is not None:
                found.append(f"{page.relative_to(root)}: {target}: {problem}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.docs", description=__doc__.splitlines()[0] if __doc__
                                     else None)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a generated part is out of date or a link does not resolve")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for item in out_of_date:
            print(f"out of date: {item} (run {REGENERATE})", file=sys.stderr)
        broken = broken_links()
        for item in broken:
            print(f"broken link: {item}", file=sys.stderr)
        return 1 if out_of_date or broken else 0
    for item in write():
        print(f"rewrote {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
