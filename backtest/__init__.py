"""The backtest (DESIGN §12): the fleet's own decision code run over historical klines, in one process,
on a simulated clock, without Redis.

Every decision is the service's own pure function — trading_bot's signal and sizing
(:mod:`services.trading_bot.signals`, :mod:`services.trading_bot.intents`, the trained model through
:mod:`services.ai_engine.predictor`), intent_bridge's rules (:mod:`services.intent_bridge.bridge`),
apply_layer's gates and position book (:mod:`services.apply_layer.gates`, :mod:`services.apply_layer.book`),
the paper exchange's fill model (:mod:`common.exchange.paper.book`), exitbrain
(:mod:`services.exitbrain.decide`), the harvest ladder (:mod:`services.harvest_proposal.propose`), the
ledger (:mod:`services.harvest_brain.booking`, :mod:`common.maths.ledger`) and the governor's loss limits
(:mod:`services.governor.risk`). This package only sequences them, the way the fleet's streams do:

- :mod:`backtest.engine` — the clock and the order of events (below);
- :mod:`backtest.exchange` — the paper exchange's book in memory;
- :mod:`backtest.apply` — apply_layer's handling of plans and exchange fills, the books and the governor;
- :mod:`backtest.exits` — exitbrain and harvest_proposal per position;
- :mod:`backtest.signals` — trading_bot and intent_bridge per closed kline;
- :mod:`backtest.quiet` — the fast path: price bands inside which a path point provably changes nothing;
- :mod:`backtest.metrics`, :mod:`backtest.report` — the summary and its files;
- :mod:`backtest.walk_forward` — train on one window, test on the next.

**The clock and the price path.** Each kline of ``[t, t+L)`` is four path points — its open at ``t``,
its two extremes at ``t+L/3`` and ``t+2L/3`` (low first in a rising candle, high first in a falling
one: O→L→H→C or O→H→L→C, :func:`services.marketdata.replay.path_prices`, the very path the fleet's
replay publishes as ticks) and its close at ``t+L−1`` — then the closed kline at ``t+L``. At every path
point of a symbol, in this order: the paper exchange's conditional orders and liquidation (what the
price crossed, farthest first), harvest_proposal's ladder and exitbrain's handling of its proposals,
then exitbrain's risk exits; each plan is executed at once. At the close: marketdata's market state,
then trading_bot's signal, intent_bridge and apply_layer's entry. Fills happen at the path point's price
(slipped), so a stop crossed between the open and the low fills at the low.
"""
