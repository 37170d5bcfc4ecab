"""The fleet collector: gRPC ingest from many agents, storage backends, the query engine."""
