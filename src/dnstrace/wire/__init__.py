"""The agent <-> collector contract: event codec, protobuf/gRPC, rollup rows, client, transport security."""
