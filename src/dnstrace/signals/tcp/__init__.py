"""TCP SYN retransmits and connect outcomes (tracepoints)."""
