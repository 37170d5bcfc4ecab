"""dnstrace: find out why name resolution and connection setup are slow or failing, per process.

This package holds the command line and what the agent and the collector share
(errors, logging, units, the event schema, output writers). The kernel side lives
in ``dnstrace.kernel``, the node agent in ``dnstrace.agent``, the fleet collector in
``dnstrace.collector``.
"""

__version__ = "0.1.0"
