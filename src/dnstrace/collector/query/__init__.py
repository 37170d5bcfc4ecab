"""Queries over the stored events: the SQL each store runs, and what bounds one query."""
