"""The `copyledger` command line."""
