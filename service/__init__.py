"""The NeurFlow service: a Litestar REST API over the engine and labeler, with durable jobs.

Folders by domain, each a set of modules with one job, listed bottom to top: a folder imports only the
root modules and the folders listed before it, and no module imports in a circle (``tests/test_layers.py``).

* ``settings``  – the one Settings object (defaults < config file < ``NEURFLOW_*`` env < flags)
* ``errors``    – domain errors (the status, title and slug a client sees) and the redaction of the
  server's own paths from every message
* ``storage/``  – what is kept
  * ``keys``      – the artifact key layout: where weights, datasets, job outputs, circuit documents,
    mosaics and exemplars live in the store
  * ``artifacts`` – the artifact store (a local folder or any fsspec URL)
  * ``db``        – the SQLite (WAL) database: versioned schema, migration, connections
  * ``catalog``   – models, datasets, circuits and API keys rows
* ``jobs/``     – what a job is
  * ``types``   – the typed job (``RunJob | RelabelJob | DebugJob | EvaluateJob | DiffJob``, tagged by ``kind``)
    with typed references (``ModelRef``, ``DatasetRef``, ``CircuitRef``), and the worker pipe's messages
  * ``store``   – the job table (typed job + the ids it uses as columns) and its state transitions
  * ``limits``  – the bounds of a submitted job spec and its estimated cost
  * ``policy``  – what a submitted job may ask for; turns the public job spec into a ``RunJob``
  * ``summary`` – the per-circuit summary kept in the catalog
* ``intake/``   – every upload checked before anything is stored
  * ``models``      – the model descriptor, and weights checked against it
  * ``weightfile``  – a safetensors file read without loading it: header, byte ranges, finite values
  * ``weightcheck`` – the weight checker: a child process that builds the architecture on ``meta``
  * ``images``      – PNG/JPEG decoding under pixel caps
  * ``archives``    – dataset zips: safe members, size caps, every image decoded
* ``executors/`` – what runs the queued jobs
  * ``base``      – the executor interface and the bookkeeping of finished classes every executor shares
  * ``factory``   – ``create_executor``: ``local`` or ``ray``, as the settings say
  * ``local``     – the local executor: worker subprocesses (spawn), dispatch, cancellation, crash handling
  * ``worker``    – the local worker process's loop
  * ``ray``       – the Ray executor (optional extra): a job's units of work as Ray tasks;
    ``ray_guard`` – their progress board, memory watchdog and per-unit reports
  * ``context``   – what a task runs with in a worker process (store, device, resident models)
  * ``tasks``     – what a worker runs for each job kind
  * ``units``     – a run's units of work (what its classes share, one class), the same for every executor
  * ``gpu``       – device checks, out-of-memory batch halving, autocast, determinism
* ``http/``     – the REST API
  * ``app``       – ``create_app(settings)``: routers, layered body limits, plugins, middleware
  * ``controllers/*`` – one module-level ``Controller`` per resource (models, datasets, jobs, circuits,
    debug, exports, report, atlas, the Label Studio ML backend) and the health route
  * ``answers``   – the wait-then-answer of interactive jobs
  * ``deps``      – the components handlers get, as Litestar ``Provide`` dependencies
  * ``schemas``   – the response and request Structs of the routes
  * ``security``  – API keys (auth middleware) and rate limits; ``bodylimits`` – multipart field limits
  * ``problems``  – every error rendered as problem+json
  * ``openapi``   – the document's bounds, problems and closed objects; ``methods`` – ``OPTIONS`` from it

The client (``neurflow submit``, the demo, the tests) is not part of the service: it is
``neurflow.client``, beside it, and imports nothing of it.

How a job travels: ``POST /v1/jobs`` decodes the public ``JobSpec`` (model and dataset ids) ->
``jobs.policy.prepare_run`` checks it against the caller's catalog and builds a ``RunJob`` once ->
``JobStore.create`` stores it msgspec-encoded with ``model_id``/``dataset_id``/``circuit_id``
columns -> the executor decodes the row; the local one sends ``RunTask(id, attempt, job)`` over the
pipe -> the worker decodes ``ToWorker``, ``executors.tasks.run_task`` resolves ids to local paths
through ``storage.keys`` and the store, prepares the job once (``executors.units.prepare``) and runs
each class through ``labeler.pipeline.run_class`` (fit, label, write: the steps of ``neurflow run``)
on the worker's GPU path (``executors.units.fit_one``) -> it answers
``Finished(TaskOutput)`` and the executor registers the new circuits in the same transaction that
marks the job succeeded.
"""
