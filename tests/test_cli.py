"""The console script as a user meets it: exit codes and messages."""

import pytest

from cli.main import main


def _bad_coco(tmp_path):
    annotations = tmp_path / "coco" / "annotations"
    annotations.mkdir(parents=True)
    (tmp_path / "coco" / "train2017").mkdir()
    (annotations / "captions_train2017.json").write_text('{"images": [{"id": 1}],\n "annotations": [ {"id": 1}\n')
    config = tmp_path / "corpus.yaml"
    config.write_text("output: out\nsources:\n  coco: {kind: coco, root: coco, shards: 2}\n")
    return str(config)


def test_unreadable_file_fails_the_run_naming_file_and_line(tmp_path, capsys):
    assert main(["ingest", "--config", _bad_coco(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "captions_train2017.json: not valid JSON" in err and "line 3" in err
    assert "Traceback" not in err


def test_config_and_runner_errors(tmp_path, capsys):
    config = _bad_coco(tmp_path)
    assert main(["ingest", "--config", config, "--runner", "dask"]) == 2
    assert "refused: Beam's DaskRunner" in capsys.readouterr().err
    assert main(["ingest", "--config", config, "--source", "vg"]) == 2
    assert "--source vg: not in the config" in capsys.readouterr().err
    (tmp_path / "corpus.yaml").write_text("output: out\nsources:\n  coco: {kind: coco, root: coco, shards: two}\n")
    assert main(["ingest", "--config", config]) == 2
    assert "sources.coco.shards: expected int" in capsys.readouterr().err


def test_clean_before_ingest_says_what_to_do(tmp_path, capsys):
    assert main(["clean", "--config", _bad_coco(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "source coco: no ingested shards" in err and "run ingest first" in err


def test_version_comes_from_the_package_metadata(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"unicorpus {metadata.version('unicorpus')}\n"


def test_help_describes_the_tool_in_whole_sentences_and_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    description = " ".join(out.split("\n\n")[1].split())
    assert description.startswith("Build vision-language pre-training corpora") and description.endswith(".")
    for command in ("ingest", "clean", "demo", "annotate", "embed", "index", "retrieve", "query", "serve",
                    "report", "pack", "train"):
        assert f"\n    {command} " in out


@pytest.mark.parametrize("argv", [
    ["query", "--config", "corpus.yaml", "--bogus"],
    ["serve", "--config", "corpus.yaml", "--bogus"],
    ["report", "--config", "corpus.yaml", "--bogus"],
    ["train", "--config", "train.yaml", "--bogus", "optim.lr=1e-4"],
])
def test_unknown_options_are_usage_errors_where_no_beam_options_pass(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: unicorpus {argv[0]} ")
    assert f"unicorpus {argv[0]}: error: unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("argv", [
    ["ingest", "--config"], ["annotate", "parse", "--config"], ["embed", "--config"], ["pack", "--config"],
    ["retrieve", "--config"], ["index", "--config"], ["clean", "--config"],
])
def test_pipeline_commands_pass_unknown_options_to_beam(argv, tmp_path, capsys):
    """The option is not refused: the command runs as it would without it, and fails on the broken source
    (ingest) or the missing ingest (the later stages), or finds nothing to do (retrieve, nothing configured)."""
    code = main([*argv, _bad_coco(tmp_path), "--quiet", "--flink_master=localhost:8081"])
    out, err = capsys.readouterr()
    assert "unrecognized arguments" not in err and "usage:" not in err
    if argv[0] == "retrieve":
        assert code == 0 and out.startswith("nothing to retrieve")
    else:
        assert code in (1, 2) and err.startswith(f"unicorpus {argv[0]}: error: ")
