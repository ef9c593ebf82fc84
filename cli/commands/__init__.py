"""Subcommands of the `keepdocker` CLI shim; each module registers one command with add_parser()."""
