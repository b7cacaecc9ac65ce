"""The HTTP API: the Datameer wire contract on FastAPI. Thin: validate, call services, render."""
