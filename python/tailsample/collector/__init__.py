"""What every component of `tailsample serve` shares: its settings (the collector YAML), metrics, TLS, OTLP
status messages, auth, throttled logging, the Kafka client settings and the collector's file formats.

The layer above the engine: it imports only `engine`, `errors`, `config`, `storage` and itself.
"""
