"""harvest_brain: the books — execution.result into the ledger hashes, trade.closed on a full close."""
