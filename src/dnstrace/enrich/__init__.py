"""Enrichment: what a process is (comm, container, pod), the resolv.conf it sees, local resolvers."""
