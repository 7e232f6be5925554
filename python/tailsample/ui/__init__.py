"""What a person looks at in a running service: the status page (`status.py`) on the metrics endpoint."""
