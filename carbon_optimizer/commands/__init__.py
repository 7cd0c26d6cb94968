"""CLI subcommands, one module each, registered by carbon_optimizer.cli.build_parser."""
