"""Beam runner selection: one place that turns ``--runner`` and friends into PipelineOptions.

``direct`` runs in this process (``workers`` > 1: that many local processes). ``portable`` submits to
a Beam job service (``job_endpoint``) whose SDK workers come from an EXTERNAL worker pool
(``worker_pool``): the protocol Flink and Spark clusters use to run Python workers. ``flink``,
``spark`` and ``dataflow`` name Beam's own runners; their options (``--flink_master``, ``--project``,
...) pass through unchanged. Beam's DaskRunner is refused: in the current release it silently skips
all but one branch of a pipeline (ENVIRONMENT.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas.config_build import accepted

RUNNERS = {
    "direct": "DirectRunner",
    "portable": "PortableRunner",
    "flink": "FlinkRunner",
    "spark": "SparkRunner",
    "dataflow": "DataflowRunner",
}
RunnerName = Literal[tuple(RUNNERS)]  # what --runner accepts (any case, with or without "Runner")
REFUSED = {
    "dask": "Beam's DaskRunner runs only the last-applied branch of a pipeline and drops the other sinks "
    "without an error; use --runner direct, portable, flink, spark or dataflow",
}


class RunnerError(ValueError):
    pass


@dataclass
class RunnerConfig:
    runner: str = "direct"  # a RunnerName, in any case, with or without Beam's "Runner" suffix
    workers: int = 1  # direct: local processes
    job_endpoint: str | None = None  # portable: host:port of a Beam job service
    worker_pool: str | None = None  # portable: host:port of an EXTERNAL SDK worker pool
    beam_args: list[str] = field(default_factory=list)  # passed to Beam unchanged

    def validate(self) -> None:
        name = self.runner.lower().removesuffix("runner")
        if name in REFUSED:
            raise RunnerError(f"--runner {self.runner}: refused: {REFUSED[name]}")
        if name not in RUNNERS:
            raise RunnerError(f"--runner: expected {accepted(RunnerName)}, got {self.runner!r}")
        if self.workers < 1:
            raise RunnerError(f"--workers: expected a positive integer, got {self.workers}")
        if name == "portable" and not self.job_endpoint:
            raise RunnerError("--runner portable needs --job-endpoint HOST:PORT (a Beam job service)")
        if any(arg.split("=")[0] == "--runner" for arg in self.beam_args):
            raise RunnerError("give the runner with --runner, not among the Beam options")


def pipeline_options(config: RunnerConfig):
    from apache_beam.options.pipeline_options import PipelineOptions

    config.validate()
    name = config.runner.lower().removesuffix("runner")
    args = [f"--runner={RUNNERS[name]}"]
    if name == "direct":
        if config.workers > 1:
            args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={config.workers}",
                     "--default_sdk_harness_log_level=WARNING"]  # workers log every bundle at INFO
        else:
            args += ["--direct_running_mode=in_memory"]
    if name == "portable":
        args.append(f"--job_endpoint={config.job_endpoint}")
        if config.worker_pool:
            args += ["--environment_type=EXTERNAL", f"--environment_config={config.worker_pool}"]
    return PipelineOptions(args + config.beam_args)
