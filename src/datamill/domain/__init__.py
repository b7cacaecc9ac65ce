"""Plain records and rules. Imports nothing else of datamill."""
