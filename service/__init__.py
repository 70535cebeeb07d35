"""The NeurFlow service: a Litestar REST API over the engine and labeler, with durable jobs.

Modules, one job each (bottom to top; nothing imports upward):

* ``settings``  – the one Settings object (defaults < config file < ``NEURFLOW_*`` env < flags)
* ``errors``    – domain errors; Litestar's ``ProblemDetailsPlugin`` renders them (and HTTP errors)
  as problem+json
* ``keys``      – the artifact key layout: where weights, datasets, job outputs, circuit documents,
  mosaics and exemplars live in the store
* ``storage``   – the artifact store (a local folder or any fsspec URL)
* ``db``        – the SQLite (WAL) database: versioned schema, migration, connections
* ``catalog``   – models, datasets, circuits and API keys rows
* ``jobtypes``  – the typed job (``RunJob | RelabelJob | DebugJob | EvaluateJob``, tagged by ``kind``)
  with typed references (``ModelRef``, ``DatasetRef``, ``CircuitRef``), and the worker pipe's messages
* ``jobstore``  – the job table (typed job + the ids it uses as columns) and its state transitions
* ``intake``    – checking uploads: weights vs architecture, dataset zips, images
* ``policy``    – what a submitted job may ask for; turns the public job spec into a ``RunJob``
* ``executor``  – the executor interface (``create_executor`` picks ``local`` or ``ray``) and the
  bookkeeping of finished classes every executor shares
* ``manager``   – the local executor: worker subprocesses (spawn), dispatch, cancellation, crash handling
* ``executor_ray`` – the Ray executor (optional extra): a job's units of work as Ray tasks
* ``worker``    – the worker process loop; ``tasks`` – what a worker runs for each job kind
* ``units``     – a run's units of work (what its classes share, one class), the same for every executor;
  ``gpu`` – device checks, out-of-memory batch halving, autocast, determinism
* ``summary``   – the per-circuit summary kept in the catalog
* ``deps``      – the components handlers get, as Litestar ``Provide`` dependencies
* ``security``  – API keys (auth middleware) and rate limits
* ``api/*``     – one module-level ``Controller`` per resource (models, datasets, jobs, circuits,
  debug, exports, report, the Label Studio ML backend) and the health route; ``api.answers`` – the
  wait-then-answer of interactive jobs
* ``app``       – ``create_app(settings)``: routers, layered body limits, plugins, middleware
* ``client``    – a small HTTP client (``neurflow submit``, the demo); ``process`` – starting a server
  as a child process (demo, load test, tests)

How a job travels: ``POST /v1/jobs`` decodes the public ``JobSpec`` (model and dataset ids) ->
``policy.prepare_run`` checks it against the caller's catalog and builds a ``RunJob`` once ->
``JobStore.create`` stores it msgspec-encoded with ``model_id``/``dataset_id``/``circuit_id``
columns -> the manager decodes the row and sends ``RunTask(id, attempt, job)`` over the pipe -> the
worker decodes ``ToWorker``, ``tasks.run_task`` resolves ids to local paths through ``keys`` and the
store and calls the engine with explicit overrides (``labeler.pipeline.run_job(..., images_dir=,
weights_path=, device=, labeling=)``) -> it answers ``Finished(TaskOutput)`` and the manager
registers the new circuits in the same transaction that marks the job succeeded.
"""
