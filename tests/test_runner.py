import pytest

from pipelines.runner import RunnerConfig, RunnerError, pipeline_options


def _args(config):
    return pipeline_options(config).get_all_options()


def test_direct_in_process_and_multi_process():
    assert _args(RunnerConfig())["direct_running_mode"] == "in_memory"
    options = _args(RunnerConfig(workers=2))
    assert options["runner"] == "DirectRunner"
    assert options["direct_running_mode"] == "multi_processing" and options["direct_num_workers"] == 2


def test_portable_uses_an_external_worker_pool():
    options = _args(RunnerConfig("portable", job_endpoint="127.0.0.1:8099", worker_pool="127.0.0.1:50000"))
    assert options["runner"] == "PortableRunner" and options["job_endpoint"] == "127.0.0.1:8099"
    assert options["environment_type"] == "EXTERNAL" and options["environment_config"] == "127.0.0.1:50000"


def test_cluster_runner_options_pass_through():
    options = _args(RunnerConfig("flink", beam_args=["--flink_master=host:8081", "--parallelism=4"]))
    assert options["runner"] == "FlinkRunner" and options["flink_master"] == "host:8081"
    assert options["parallelism"] == 4


@pytest.mark.parametrize(
    "config, message",
    [
        (RunnerConfig("dask"), "refused: Beam's DaskRunner"),
        (RunnerConfig("DaskRunner"), "refused"),
        (RunnerConfig("prism"), r"^--runner: expected direct \| portable \| flink \| spark \| dataflow, got 'prism'"),
        (RunnerConfig("portable"), "needs --job-endpoint"),
        (RunnerConfig(workers=0), "--workers"),
        (RunnerConfig(beam_args=["--runner=FlinkRunner"]), "give the runner with --runner"),
    ],
)
def test_bad_runner_choices_are_refused(config, message):
    with pytest.raises(RunnerError, match=message):
        config.validate()
