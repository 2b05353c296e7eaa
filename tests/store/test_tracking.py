"""The run schema against a real sqlite store: write, read back, import, idempotency."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import RunStatus

from fennec_mlflow import config
from fennec_mlflow.store import external
from fennec_mlflow.store import tracking


def write_cell(client, exp_id, model, task, value, status="FINISHED", kind="fda"):
    record = tracking.RunRecord(kind=kind, model=model, task=task,
                                cell=tracking.cell_key(kind, model=model, task=task),
                                params={"model_parameters": 1000 + len(model), "task_class_count": len(task)},
                                metrics={tracking.MATRIX_METRIC[kind]: value})
    if status == "FINISHED":
        return tracking.write_run(client, exp_id, record)
    run_id = tracking.start_run(client, exp_id, record)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def test_matrix_read_back_equals_what_was_logged(store):
    exp_id = tracking.experiment_id(store)
    rng = np.random.default_rng(0)
    truth = pd.DataFrame(rng.random((4, 3)), index=[f"m{i}" for i in range(4)], columns=["ta", "tbb", "tccc"])
    truth.iloc[1, 2] = np.nan  # a hole stays a hole
    for model in truth.index:
        for task in truth.columns:
            if not np.isnan(truth.loc[model, task]):
                write_cell(store, exp_id, model, task, truth.loc[model, task] - 1)  # superseded below
                write_cell(store, exp_id, model, task, truth.loc[model, task])
    # crashed and killed runs never reach the matrix
    write_cell(store, exp_id, "m0", "ta", 99.0, status="FAILED")
    write_cell(store, exp_id, "m1", "tccc", 99.0, status="RUNNING")
    write_cell(store, exp_id, "m9", "ta", 99.0, status="KILLED")
    km = tracking.load_matrix("fda", mlflow_client=store)
    pd.testing.assert_frame_equal(km.values, truth.sort_index().sort_index(axis=1), check_names=False)
    assert km.model_facts.loc["m2", "parameters"] == 1002
    assert km.task_facts.loc["tbb", "class_count"] == 3
    assert km.run_ids.notna().sum().sum() == 11


def test_best_evidence_takes_each_tasks_fine_tunes_where_it_has_enough_else_its_fda_scores(store):
    exp_id = tracking.experiment_id(store)
    models = [f"m{i}" for i in range(4)]
    for i, model in enumerate(models):
        for task in ("tuned", "scored", "thin"):
            write_cell(store, exp_id, model, task, 10.0 + i)  # FDA of every cell
        write_cell(store, exp_id, model, "tuned", 0.5 + 0.1 * i, kind="finetune")
    write_cell(store, exp_id, "m0", "thin", 0.9, kind="finetune")  # one fine-tuned model: too few
    write_cell(store, exp_id, "m9", "only-tuned", 0.3, kind="finetune")  # a model and a task without FDA
    for model in models[:2]:
        write_cell(store, exp_id, model, "only-tuned", 0.4, kind="finetune")
    km = tracking.load_matrix("best", mlflow_client=store)
    assert list(km.values.columns) == ["only-tuned", "scored", "thin", "tuned"]
    assert list(km.values.index) == ["m0", "m1", "m2", "m3", "m9"]
    np.testing.assert_allclose(km.values.loc[models, "tuned"], [0.5, 0.6, 0.7, 0.8])
    np.testing.assert_allclose(km.values.loc[models, "thin"], [10, 11, 12, 13])
    assert km.values.loc["m9", "only-tuned"] == 0.3 and np.isnan(km.values.loc["m9", "scored"])
    assert km.task_weights.to_dict() == {"only-tuned": 1.0, "scored": config.SCORE_ONLY_TASK_WEIGHT,
                                         "thin": config.SCORE_ONLY_TASK_WEIGHT, "tuned": 1.0}
    assert km.run_ids.notna().sum().sum() == km.values.notna().sum().sum()
    assert km.task_facts.loc["only-tuned", "class_count"] == len("only-tuned")
    with pytest.raises(tracking.TrackingError, match="unknown fine-tune regime"):
        tracking.load_matrix("best", regime="partial", mlflow_client=store)


def test_unknown_experiment_and_kind_are_clear_errors(store):
    with pytest.raises(tracking.TrackingError, match="no experiment named 'nope'"):
        tracking.load_matrix("fda", experiment="nope", mlflow_client=store)
    with pytest.raises(tracking.TrackingError, match="do not fill a matrix"):
        tracking.load_matrix("rank", mlflow_client=store)


def test_parc_controlled_imports_as_32_by_7_with_28_holes(store):
    path = external.bundled_table("parc_controlled")
    created, skipped = external.import_table(path, mlflow_client=store, progress=False)
    assert (created, skipped) == (196, 0)
    km = tracking.load_matrix("external", source="parc_controlled", mlflow_client=store)
    assert km.shape == (32, 7)
    assert int(km.values.isna().sum().sum()) == 28
    raw = pd.read_csv(path)
    row = raw.iloc[17]
    assert km.values.loc[f"{row['Architecture']}@{row['Source Dataset']}", row["Target Dataset"]] == row["Oracle"]
    for model in km.values.index:  # the holes are exactly source == target
        arch, source = model.split("@")
        if source in km.values.columns:
            assert np.isnan(km.values.loc[model, source])
    assert km.model_facts.loc["resnet50@imagenet", "architecture"] == "resnet50"
    assert external.import_table(path, mlflow_client=store, progress=False) == (0, 196)


def test_transfergraph_subset_and_long_tables(store, tmp_path):
    records = pd.read_csv(external.bundled_table("transfergraph")).head(60)
    subset = tmp_path / "tg.csv"
    records.to_csv(subset, index=False)
    external.import_table(subset, source="tg", model_facts_csv=external.transfergraph_model_facts(),
                          mlflow_client=store, progress=False)
    km = tracking.load_matrix("external", source="tg", mlflow_client=store)
    expected = records.drop_duplicates(subset=["model", "finetuned_dataset"], keep="last")
    assert int(km.values.notna().sum().sum()) == len(expected)
    assert "type" in km.model_facts.columns and "parameters" in km.model_facts.columns

    long = tmp_path / "mine.csv"
    pd.DataFrame({"model": ["a", "b"], "task": ["x", "x"], "score": [0.5, 0.7], "task_class_count": [10, 10]}).to_csv(long, index=False)
    external.import_table(long, mlflow_client=store, progress=False)
    km = tracking.load_matrix("external", source="mine", mlflow_client=store)
    assert km.values.loc["b", "x"] == 0.7 and km.task_facts.loc["x", "class_count"] == 10

    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\na,1\n")  # no column names a model, a task or a score
    with pytest.raises(external.TableError, match="cannot tell the table layout"):
        external.import_table(bad, mlflow_client=store, progress=False)


def test_finished_cells_lists_only_finished_runs(store):
    exp_id = tracking.experiment_id(store)
    done = write_cell(store, exp_id, "m", "t", 1.0)
    write_cell(store, exp_id, "m", "u", 1.0, status="FAILED")
    cells = tracking.finished_cells(store, tracking.DEFAULT_EXPERIMENT, "fda")
    assert cells == {tracking.cell_key("fda", model="m", task="t"): done}
    assert store.get_run(done).info.status == RunStatus.to_string(RunStatus.FINISHED)
    assert store.get_run(done).data.tags[tracking.KIND_TAG] == "fda"


def test_sql_and_search_readers_agree(store, monkeypatch):
    """The fast SQL reader and MLflow's paged search give the same matrix and facts."""
    exp_id = tracking.experiment_id(store)
    rng = np.random.default_rng(1)
    for model in ("a", "b", "c"):
        for task in ("x", "y"):
            write_cell(store, exp_id, model, task, rng.random())
    write_cell(store, exp_id, "a", "x", 0.123)  # newer run of the same cell wins in both
    write_cell(store, exp_id, "c", "y", 5.0, status="FAILED")
    deleted = write_cell(store, exp_id, "d", "x", 7.0)
    store.delete_run(deleted)
    external.import_table(external.bundled_table("parc_controlled"), mlflow_client=store, progress=False)
    for kwargs in ({"kind": "fda"}, {"kind": "external", "source": "parc_controlled"},
                   {"kind": "external", "estimator": "external:parc_controlled"}):
        fast = tracking.load_matrix(mlflow_client=store, **kwargs)
        slow = tracking._assemble(tracking._cell_rows_search(
            store, [exp_id], kwargs["kind"], tracking.MATRIX_METRIC[kwargs["kind"]],
            kwargs.get("estimator"), kwargs.get("source")))
        pd.testing.assert_frame_equal(fast.values, slow.values)
        pd.testing.assert_frame_equal(fast.run_ids, slow.run_ids)
        pd.testing.assert_frame_equal(fast.model_facts, slow.model_facts)
        pd.testing.assert_frame_equal(fast.task_facts, slow.task_facts)
    assert tracking.load_matrix("fda", mlflow_client=store).values.loc["a", "x"] == 0.123
    fast_ax_run_id = tracking.load_matrix("fda", mlflow_client=store).run_ids.loc["a", "x"]
    assert "d" not in tracking.load_matrix("fda", mlflow_client=store).values.index
    # the cell ledgers that resumed jobs read: the same from SQL and from MLflow's search
    ledgers = {finished: tracking._cell_runs(store, tracking.DEFAULT_EXPERIMENT, "fda", finished)
               for finished in (True, False)}
    monkeypatch.setattr(tracking, "_sql_engine", lambda client: None)
    for finished, fast in ledgers.items():
        assert sorted(fast) == sorted(tracking._cell_runs(store, tracking.DEFAULT_EXPERIMENT, "fda", finished))
        assert deleted not in {run_id for _, run_id in fast}
    assert len(ledgers[False]) == 1  # the FAILED run
    newest = tracking.finished_cells(store, tracking.DEFAULT_EXPERIMENT, "fda")
    assert newest[tracking.cell_key("fda", model="a", task="x")] == fast_ax_run_id


def _record(model, **params):
    return tracking.RunRecord(kind="external", model=model, task="t", tags={tracking.SOURCE_TAG: "s"},
                              cell=tracking.cell_key("external", model=model, task="t"),
                              params={"estimator": "e", "model_width": 1.5, "note": "v" * 7000, **params},
                              metrics={"score": 0.25, "undefined": float("nan")})


def test_batched_runs_are_the_runs_the_client_writes(store):
    """write_runs' SQL batches store what create_run + log_batch + set_terminated store."""
    exp_id = tracking.experiment_id(store)
    by_client = tracking.write_run(store, exp_id, _record("a"))
    batched = tracking.write_runs(store, exp_id, [_record("b"), _record("c")], batch_size=1)
    a, b = store.get_run(by_client), store.get_run(batched[0])
    for name in ("status", "lifecycle_stage", "user_id", "experiment_id"):
        assert getattr(b.info, name) == getattr(a.info, name)
    assert b.info.run_name == "external-b-t" and b.info.end_time >= b.info.start_time > 0
    assert b.info.artifact_uri == a.info.artifact_uri.replace(by_client, batched[0])
    assert b.data.params == a.data.params and len(b.data.params["note"]) == 6000
    assert b.data.metrics == a.data.metrics == {"score": 0.25}
    differ = {tracking.MODEL_TAG, tracking.CELL_TAG, "mlflow.runName"}
    assert {k: v for k, v in b.data.tags.items() if k not in differ} == \
        {k: v for k, v in a.data.tags.items() if k not in differ}
    assert [m.value for m in store.get_metric_history(batched[0], "score")] == [0.25]
    found = store.search_runs([exp_id], "params.estimator = 'e' and metrics.score = 0.25 and tags.`fennec.model` = 'c'")
    assert [run.info.run_id for run in found] == [batched[1]]
    assert tracking.finished_cells(store, tracking.DEFAULT_EXPERIMENT, "external") == {
        tracking.cell_key("external", model=m, task="t"): run_id for m, run_id in zip("abc", [by_client, *batched])}


def test_a_bad_batch_writes_nothing(store):
    exp_id = tracking.experiment_id(store)
    with pytest.raises(tracking.TrackingError, match="'bad#name' is not a valid MLflow"):
        tracking.write_runs(store, exp_id, [_record("a"), _record("b", **{"bad#name": 1})])
    assert tracking.finished_cells(store, tracking.DEFAULT_EXPERIMENT, "external") == {}


def test_write_runs_through_the_client(store, monkeypatch, tmp_path):
    """Records with artifacts, and stores without SQL access (a server), go through write_run."""
    exp_id = tracking.experiment_id(store)
    with_artifact = _record("a")
    with_artifact.artifacts = {"facts.json": {"x": 1}}
    [run_id] = tracking.write_runs(store, exp_id, [with_artifact])
    assert tracking.download_json(store, run_id, "facts.json") == {"x": 1}
    monkeypatch.setattr(tracking, "_sql_engine", lambda client: None)
    written = []
    run_ids = tracking.write_runs(store, exp_id, [_record(m) for m in "bcd"], threads=1, on_written=written.append)
    assert written == [1, 1, 1]
    assert [store.get_run(r).data.tags[tracking.MODEL_TAG] for r in run_ids] == list("bcd")
    assert {store.get_run(r).info.status for r in run_ids} == {"FINISHED"}


def test_experiments_the_project_creates_carry_a_description(store):
    client = tracking.client()
    for name in ("fennec", "fennec-eval-parc"):
        experiment = client.get_experiment(tracking.experiment_id(client, name))
        assert experiment.tags["mlflow.note.content"] == tracking.experiment_description(name) != ""
    with tracking.own_run("fennec-tune-parc", "a-run", {tracking.KIND_TAG: "tune"}):
        pass
    assert "Optuna" in client.get_experiment_by_name("fennec-tune-parc").tags["mlflow.note.content"]


def test_artifacts_go_next_to_a_sqlite_store_whatever_the_working_directory(store, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # as under `mlflow run <project>`: the working directory is the project's
    client = tracking.client()
    experiment = client.get_experiment(tracking.experiment_id(client, "fennec-artifacts-here"))
    database = Path(client.tracking_uri[len("sqlite:///"):]).resolve()
    assert experiment.artifact_location == (database.parent / "mlruns").as_uri()
    assert not (elsewhere / "mlruns").exists()


def test_merging_imported_sources_is_said_with_each_pair_of_sources_that_disagree(store, tmp_path):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main, merged_sources_lines
    from tests.planted import planted_long_table, write_table

    table = planted_long_table(n_models=4, n_tasks=3, holes=0)
    external.import_table(write_table(table, tmp_path / "kornblith.csv"), source="kornblith", progress=False)
    assert tracking.imported_sources() == ["kornblith"] and merged_sources_lines(config.DEFAULT_EXPERIMENT) == []
    mine = table.copy()
    mine.loc[mine["model"] == "net00", "score"] += 1.0  # net00's 3 cells differ
    external.import_table(write_table(mine, tmp_path / "mine.csv"), source="mine", progress=False)
    assert tracking.imported_sources() == ["kornblith", "mine"]
    (conflict,) = tracking.source_conflicts(["kornblith", "mine"])
    assert (conflict.first, conflict.second, conflict.cells) == ("kornblith", "mine", 3)
    assert conflict.example[:2] == ("net00", "task0") and conflict.example[3] == pytest.approx(conflict.example[2] + 1)
    result = CliRunner().invoke(main, ["matrix", "--kind", "external"])
    assert result.exit_code == 0, result.output
    assert "note: no --source given: the imported sources kornblith, mine are merged into one matrix" in result.output
    assert ("warning: 3 cell(s) differ between sources kornblith and mine; the newer import's value is used (e.g. "
            "net00 on task0: kornblith ") in result.output and "pass --source to use one table" in result.output
    one = CliRunner().invoke(main, ["matrix", "--kind", "external", "--source", "mine"])
    assert one.exit_code == 0 and "merged" not in one.output and "differ" not in one.output
