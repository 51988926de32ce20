"""Operator tooling: the `qt` command, Redis ACLs, systemd units, the wiring report, the embedded Redis.

Nothing here is imported by a service; it imports what the services share (`common/`).
"""
