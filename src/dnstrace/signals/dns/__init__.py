"""DNS on the wire: UDP and TCP port 53 messages captured by cgroup socket programs."""
