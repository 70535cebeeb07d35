"""A Ray head for the tests: ``ray.init`` with a fixed CPU count in a child process, on loopback.

Run as ``python -m tests.service.executors.ray_head TEMP_DIR CPUS``: it prints the cluster's address, then
keeps the cluster up until SIGTERM (and shuts it down then).
"""

from __future__ import annotations

import signal
import sys
import time


def main() -> None:
    import ray

    temp_dir, cpus = sys.argv[1], int(sys.argv[2])
    ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=temp_dir, _node_ip_address="127.0.0.1",
             configure_logging=False, log_to_driver=False)

    def stop(*_):
        ray.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(ray.get_runtime_context().gcs_address, flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
