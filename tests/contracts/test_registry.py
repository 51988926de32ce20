"""The stream registry checks itself (DESIGN §3): the wiring table as data must be whole."""

from __future__ import annotations

from common import keys, streams
from common.contracts import messages
from common.contracts.base import Message
from common.streams import Service


def test_every_grouped_stream_has_a_producer_and_a_group() -> None:
    """No registered consumer of a stream that nobody produces (the old execution.result fault)."""
    for spec in streams.grouped_streams():
        assert spec.producers, spec.name
        assert spec.groups, spec.name


def test_every_contract_is_registered() -> None:
    """Every Message subclass in messages.py is the contract of some stream."""
    contracts = {
        obj for obj in vars(messages).values()
        if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message
        and not obj.__name__.startswith("_")
    }
    assert contracts == {spec.contract for spec in streams.all_streams()}


def test_no_stream_name_appears_twice() -> None:
    """Names and keys are unique, and every key is quantum:stream:<name>."""
    specs = list(streams.all_streams())
    assert len({s.name for s in specs}) == len(specs)
    assert len({s.key for s in specs}) == len(specs)
    assert all(s.key == keys.stream(s.name) for s in specs)


def test_every_grouped_stream_has_a_dead_letter_stream() -> None:
    """<stream>.dlq exists for each grouped stream, written by its consumers."""
    for spec in streams.grouped_streams():
        assert spec.dlq.dead_letter_of == spec.name
        assert set(spec.dlq.producers) == set(spec.groups)


def test_producers_groups_and_readers_are_known_services() -> None:
    """Every name in the table is one of the fleet's services (or the operator tool)."""
    known = set(Service.ALL) | {Service.QT}
    for spec in streams.all_streams():
        assert set(spec.producers) | set(spec.groups) | set(spec.readers) <= known, spec.name
        assert spec.maxlen > 0


def test_the_wiring_of_design_section_3() -> None:
    """The fixes the old map asked for are in the table: execution.result reaches harvest_brain,
    harvest.proposal has a consumer, apply_layer is the only consumer of apply.plan."""
    assert Service.HARVEST_BRAIN in streams.get("execution.result").groups
    assert streams.get("execution.result").producers == (Service.APPLY_LAYER,)
    assert streams.get("harvest.proposal").groups == (Service.EXITBRAIN,)
    assert streams.get("apply.plan").groups == (Service.APPLY_LAYER,)
    assert {s.name for s in streams.consumed_by(Service.POSITION_MONITOR)} == {"apply.result", "execution.result"}
