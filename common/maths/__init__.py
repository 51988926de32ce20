"""The pure decision maths (DESIGN §7): entry sizing, indicators, market state, kill score, adaptive
exit levels and the PnL ledger. Plain functions and small frozen dataclasses; no I/O anywhere."""
