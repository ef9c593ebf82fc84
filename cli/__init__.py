"""The `keepdocker` command line, beside the flows it runs; the core package never imports it."""
