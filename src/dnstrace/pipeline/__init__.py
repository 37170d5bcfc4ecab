"""The agent's data path: signals -> enrichment -> findings -> sinks, run until told to stop."""
