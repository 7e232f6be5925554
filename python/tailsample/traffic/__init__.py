"""Traffic through the engine outside the service: synthetic traffic, the demo, replay of recorded files, and the
`tailsample bench` harness."""
