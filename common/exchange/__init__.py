"""The exchange interface (one for the paper exchange and Binance) and its domain types."""
