"""Packets dropped for routing (reverse path, martian) and netfilter reasons."""
