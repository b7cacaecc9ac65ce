"""What operators see of a running node: Prometheus metrics, structured logs."""
