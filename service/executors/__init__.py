"""Executors: what runs the queued jobs (the local worker processes or Ray tasks), the device path they
share, and the tasks and units of work that run inside them."""
