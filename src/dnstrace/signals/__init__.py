"""What the agent observes: one folder per signal (kernel program, its header, its decoder, its source)."""
