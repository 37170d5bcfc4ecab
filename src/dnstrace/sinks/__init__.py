"""Where enriched events end on the node: sliding-window aggregates (top) and Prometheus metrics."""
