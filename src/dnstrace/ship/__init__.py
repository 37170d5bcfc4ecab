"""Getting events off the node: the spool, the shipper and its transports, per-interval summaries."""
