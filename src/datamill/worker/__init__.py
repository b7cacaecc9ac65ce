"""Workers claim executions and run each one in a child process."""
