"""apply_layer: the one executor. Every order the fleet places, replaces or cancels goes through here."""
