"""Engines run job definitions on data; they never touch the metadata store."""
