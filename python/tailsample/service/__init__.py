"""`tailsample serve`: wires receivers → pipelines → exporters from one collector YAML (`app`), runs the
pipelines (`pipeline`), the memory limiter (`memory`) and the gate of the /debug endpoints (`debug`).

Its configuration, shared with every component, is read by `tailsample.collector.settings`."""
