"""Findings: rules that turn the last minute of events into a named cause, its evidence and a fix."""
