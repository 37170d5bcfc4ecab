"""getaddrinfo / gethostbyname latency in every libc on the node (uprobes)."""
