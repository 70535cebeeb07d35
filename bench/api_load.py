"""Bench section ``api``: the REST API's read endpoints under many concurrent clients.

Starts a real server on loopback with one tiny job (see :mod:`labeler.service.loadtest`), then
drives its read endpoints and prints requests per second and p50/p99 latency.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=32, help="api: concurrent clients (32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="api: load duration in seconds (10)")


def run_section(args: argparse.Namespace) -> dict:
    from bench.loadtest import run

    return run(clients=args.clients, seconds=args.seconds)
