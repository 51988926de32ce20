"""governor: the policy in force and the one kill switch."""
