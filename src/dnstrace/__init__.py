"""dnstrace: find out why name resolution and connection setup are slow or failing, per process.

The data flows kernel -> signals -> pipeline (enrich, findings) -> sinks and ship -> wire ->
collector; ``cli`` is the only door in. ARCHITECTURE.md has the map and the rules that keep
the layers apart.
"""

__version__ = "0.1.0"
