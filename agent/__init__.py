"""The node agent: loads the BPF programs, enriches and aggregates their events, ships them."""
