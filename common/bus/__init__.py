"""The bus runtime (DESIGN §5): consumer groups, atomic consume-produce, dead letters, metrics."""

from common.bus.consumer import Consumer, Delivery, consumer_name
from common.bus.effects import (
    Delete,
    Effects,
    Fence,
    FenceLost,
    HashSet,
    Op,
    OversizedEntry,
    Publish,
    SetValue,
    commit,
    publish,
)

__all__ = [
    "Consumer",
    "Delete",
    "Delivery",
    "Effects",
    "Fence",
    "FenceLost",
    "HashSet",
    "Op",
    "OversizedEntry",
    "Publish",
    "SetValue",
    "commit",
    "consumer_name",
    "publish",
]
