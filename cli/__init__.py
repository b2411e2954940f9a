"""schedctl: the operators' command-line client of the scheduler's api (docs/cli.md)."""
