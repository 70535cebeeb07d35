"""The client side of the service: what talks to a NeurFlow server over HTTP and imports nothing of it.

* ``api``     – :class:`Client`, a synchronous client of the REST API; :class:`ApiError` for problem+json answers
* ``submit``  – what ``neurflow submit`` does: upload, run, follow, download the circuits
* ``process`` – starting a server as a child process and waiting until it answers (demo, load test, tests)

It sits beside ``neurflow.service`` (the same rank in ``tests/test_layers.py``), so it cannot import
the server's modules: what it sends and reads is the public job spec (``neurflow.core.jobspec``) and JSON.
"""

from neurflow.client.api import ApiError, Client

__all__ = ["ApiError", "Client"]
