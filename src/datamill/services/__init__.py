"""Use cases shared by the API, the CLI and the worker. No HTTP in here."""
