"""The NeurFlow service: a Litestar REST API over the engine and labeler, with durable jobs.

Modules, one job each:

* ``settings``  – the one Settings object (defaults < config file < ``NEURFLOW_*`` env < flags)
* ``errors``    – domain errors and problem+json rendering
* ``db``        – the SQLite (WAL) database: schema, connections
* ``catalog``   – models, datasets, circuits and API keys rows
* ``jobstore``  – the job table and its state transitions
* ``storage``   – the artifact store (a local folder or any fsspec URL)
* ``intake``    – checking uploads: weights vs architecture, dataset zips, images
* ``manager``   – worker subprocesses (spawn), dispatch, cancellation, crash handling
* ``worker``    – the worker process loop; ``tasks`` – what a worker runs
* ``patches``   – exemplar PNGs and group mosaics
* ``api/*``     – one controller per resource; ``app`` – ``create_app(settings)``
* ``client``    – a small HTTP client (``neurflow submit``, the demo); ``cli`` – ``serve``/``submit``/``keys``
"""
