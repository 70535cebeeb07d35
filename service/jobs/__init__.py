"""Jobs: the typed job and the worker pipe's messages, the job table, what a submitted job may ask for,
and the per-circuit summary kept in the catalog."""
