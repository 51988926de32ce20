"""trading_bot: a signal on every closed kline (ai_engine, else trend-following), sized into trade.intent."""
