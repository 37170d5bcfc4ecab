"""Throwaway network labs: namespaces, veth links, real DNS servers, firewall rules.

``dnstrace lab NAME`` reproduces each seed incident with these builders, and the
kernel tests use the very same ones, so what a user sees in the lab is what CI checked.
"""
