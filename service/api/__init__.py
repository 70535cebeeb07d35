"""One controller module per resource; each exposes ``build(settings) -> Controller`` so per-route
body limits can come from the settings."""
