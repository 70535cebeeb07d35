"""HTTP: the Litestar application, its controllers (one module per resource) and what every request
passes through (keys, rate and body limits, problem+json, the OpenAPI document)."""
