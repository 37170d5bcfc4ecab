"""The dnstrace command: one module per subcommand; argparse lives here and nowhere else."""
