"""The incident tools: kept traces as trees (`show`), the propagation-gap audit and its graph (`gaps`), why a
trace was kept (`explain`), policy lint against traffic, and traces pulled back from a tracing backend."""
