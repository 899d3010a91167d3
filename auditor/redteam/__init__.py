"""Red-team self-test: plant every attack class into a copy of a collection and measure what a scan catches."""
