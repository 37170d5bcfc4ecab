"""Event stores: what every store does (base), DuckDB embedded on one node, ClickHouse for fleets."""
