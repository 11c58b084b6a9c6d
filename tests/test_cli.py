"""The console script as a user meets it: exit codes and messages."""

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
