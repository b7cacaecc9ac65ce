"""The `datamill` command line."""
