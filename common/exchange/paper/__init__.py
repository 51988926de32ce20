"""The paper exchange: :mod:`.exchange` (the :class:`PaperExchange`), :mod:`.book` (its arithmetic),
:mod:`.fills` (the fill transactions), :mod:`.store` (its book in Redis) and :mod:`.codec` (the JSON
kept there)."""

from common.exchange.paper.exchange import PaperExchange

__all__ = ["PaperExchange"]
