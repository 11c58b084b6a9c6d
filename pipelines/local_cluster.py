"""Beam's local job service and an EXTERNAL SDK worker pool, bound to loopback.

These are Beam's own servers (``local_job_service_main``, ``worker_pool_main``), started the way a Flink
or Spark cluster runs Python workers, for running ``--runner portable`` on one machine. Two traps of
the stock entry points are closed here: every gRPC server binds 127.0.0.1 instead of all interfaces,
and pool workers start with this interpreter (the pool launches ``python`` from PATH, and a different
Python makes the job hang without an error).

    python -m pipelines.local_cluster job-service --port 8099
    python -m pipelines.local_cluster worker-pool --port 50000
"""

from __future__ import annotations

import argparse
import os
import re
import sys

_ANY_INTERFACE = re.compile(r"^(\[::\]|0\.0\.0\.0|)(:\d+)$")


def bind_grpc_to_loopback() -> None:
    """Make every gRPC server of this process listen on 127.0.0.1 only."""
    import grpc

    real_server = grpc.server

    def loopback_server(*args, **kwargs):
        server = real_server(*args, **kwargs)
        add_port = server.add_insecure_port
        server.add_insecure_port = lambda address: add_port(_ANY_INTERFACE.sub(r"127.0.0.1\2", address))
        return server

    grpc.server = loopback_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.local_cluster", description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=["job-service", "worker-pool"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    bind_grpc_to_loopback()
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    if args.service == "job-service":
        from apache_beam.runners.portability import local_job_service_main

        local_job_service_main.run(["--port", str(args.port)])
    else:
        from apache_beam.runners.worker import worker_pool_main

        worker_pool_main.main(["--service_port", str(args.port)])


if __name__ == "__main__":
    main()
