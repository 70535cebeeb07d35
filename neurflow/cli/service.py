"""``neurflow serve``, ``neurflow submit`` and ``neurflow keys``."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the REST service (SQLite job table, worker subprocesses)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--data-dir", help="database, artifacts and scratch (default ./neurflow-data)")
    p.add_argument("--workers", type=int, help="worker subprocesses, one per device (default 1)")
    p.add_argument("--storage-url", help="artifact root: a folder or fsspec URL (default DATA_DIR/artifacts)")
    p.add_argument("--config", help="settings file (TOML or JSON); env NEURFLOW_* and flags override it")
    p.add_argument("--no-auth", action="store_true", help="no API keys (trusted loopback use only)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="the server's log level (default: info)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("submit", help="upload a job spec's model and images to a server, run it, download circuits")
    p.add_argument("spec", help="job spec JSON (paths as for `neurflow run`)")
    p.add_argument("--server", default="http://127.0.0.1:8000", help="service URL")
    p.add_argument("--api-key", help="API key (default: env NEURFLOW_API_KEY)")
    p.add_argument("--out", required=True, metavar="FOLDER",
                   help="folder for the downloaded circuits: FOLDER/circuit.json for one class, FOLDER/class-<c>/"
                        "circuit.json for a list or \"all\" (as `neurflow run`); an existing circuit is never replaced")
    p.add_argument("--mosaics", action="store_true", help="also download every group's mosaic PNG")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("keys", help="manage API keys of a server's data dir (only hashes are stored)")
    p.add_argument("action", choices=["create", "list", "revoke"],
                   help="create a key (printed once), list the keys' owners, or revoke an owner's keys")
    p.add_argument("name", nargs="?", help="create: a name for the key; revoke: the owner id (k-...)")
    p.add_argument("--data-dir", help="the server's data dir")
    p.add_argument("--config", help="settings file")
    p.set_defaults(func=cmd_keys)


def _settings(args: argparse.Namespace):
    from neurflow.service.settings import load_settings

    overrides = {k: getattr(args, k, None) for k in ("host", "port", "data_dir", "workers")}
    overrides["storage_url"] = getattr(args, "storage_url", None)
    if getattr(args, "no_auth", False):
        overrides["auth"] = False
    return load_settings(getattr(args, "config", None), overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from neurflow.service.http.app import create_app
    from neurflow.service.storage.catalog import Catalog
    from neurflow.service.storage.db import Database

    settings = _settings(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.auth:
        catalog = Catalog(Database(settings.db_path))
        for i, key in enumerate(settings.api_keys):
            catalog.add_key(key, f"configured-{i}")
        if not catalog.has_keys():
            key, owner = catalog.create_key("initial")
            print(f"created the first API key (shown once; only its hash is stored): {key}", file=sys.stderr)
    print(f"NeurFlow service on http://{settings.host}:{settings.port} (data: {settings.data_path}, "
          f"workers: {len(settings.device_list())}, auth: {'on' if settings.auth else 'off'})", file=sys.stderr)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from neurflow.client.api import ApiError, Client, default_api_key
    from neurflow.client.submit import progress_from_events, submit_spec
    from neurflow.progress import ProgressBars

    try:
        with ProgressBars() as bars, Client(args.server, args.api_key or default_api_key()) as client:
            written = submit_spec(args.spec, client, args.out, on_progress=progress_from_events(bars),
                                  mosaics=args.mosaics)
    except (ApiError, RuntimeError) as exc:
        raise ValueError(str(exc)) from None
    for target, path in sorted(written.items()):
        print(f"class {target}: {path}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from neurflow.service.storage.catalog import Catalog
    from neurflow.service.storage.db import Database

    settings = _settings(args)
    catalog = Catalog(Database(settings.db_path))
    if args.action == "create":
        key, owner = catalog.create_key(args.name or "key")
        print(key)
        print(f"owner {owner}; the key is shown once, only its hash is stored", file=sys.stderr)
    elif args.action == "list":
        for row in catalog.list_keys():
            print(f"{row['owner']}\t{row['name']}\t{'revoked' if row['revoked'] else 'active'}")
    else:
        if not args.name:
            raise ValueError("keys revoke needs the owner id (see `neurflow keys list`)")
        if not catalog.revoke_key(args.name):
            raise ValueError(f"no key with owner {args.name}")
        print(f"revoked {args.name}")
    return 0

