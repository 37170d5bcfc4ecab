"""Findings: rules that turn the last minute of events into a named cause, its evidence and a fix.

``engine`` (the ``FindingsEngine`` stage, ``evaluate`` for a recorded stream) builds a
``window.Window`` and runs every rule of ``registry.RULES``; each rule lives in its family's
module under ``rules/`` and returns ``model.Finding`` objects.
"""
