"""Conntrack insert failures and drops, from every network namespace's counters."""
