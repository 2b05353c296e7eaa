"""Fine-tune regimes in the store: probe and full cells of one (model, task) coexist, resume on their
own and fill one matrix each; runs written before regimes existed read as full. Real sqlite store,
real pytorchcv model, a tiny synthetic task; no mocks."""
from dataclasses import replace

import pytest

from fennec_mlflow.data.synthetic import synthetic_task
from fennec_mlflow.data.zoo import load_model
from fennec_mlflow.store import jobs, tracking
from fennec_mlflow.training.finetune import FinetuneConfig
from tests.helpers import crash_on_second_trial

MODEL = "resnet20_cifar10"


def finetune_runs(client, kind="finetune"):
    return tracking.runs_of_kind(kind, mlflow_client=client)


def test_probe_and_full_cells_coexist_and_each_resumes(store, monkeypatch):
    task = synthetic_task("gratings-orient-4", samples_per_class=20)
    full = FinetuneConfig(learning_rates=(0.05, 0.01), weight_decays=(1e-4,), max_epochs=2, patience=1,
                          progress=False)
    probe = replace(full, regime="linear-probe")
    restore = crash_on_second_trial(monkeypatch)
    for config in (probe, full):  # both killed after their first grid point
        with pytest.raises(RuntimeError, match="simulated kill"):
            jobs.finetune_cells([MODEL], [task], config=config, mlflow_client=store)
    restore()
    assert finetune_runs(store) == [] and len(finetune_runs(store, "finetune-trial")) == 2

    [full_done] = jobs.finetune_cells([MODEL], [task], config=full, mlflow_client=store)
    [probe_done] = jobs.finetune_cells([MODEL], [task], config=probe, mlflow_client=store)
    assert full_done.run_id != probe_done.run_id and not full_done.reused and not probe_done.reused
    for outcome, regime in ((full_done, "full"), (probe_done, "linear-probe")):
        parent = store.get_run(outcome.run_id)
        assert parent.data.metrics["trials_resumed"] == 1  # its own finished grid point, not the other regime's
        assert parent.data.params["regime"] == regime and parent.data.tags["fennec.regime"] == regime
        trials = tracking.runs_of_kind("finetune-trial", mlflow_client=store,
                                       extra_filter=f"tags.`mlflow.parentRunId` = '{outcome.run_id}'")
        assert len(trials) == 2 and {t.data.tags["fennec.regime"] for t in trials} == {regime}
    assert len(finetune_runs(store)) == 2 and len(finetune_runs(store, "finetune-trial")) == 4

    # one matrix per regime, from the fast SQL reader and from MLflow's search alike
    for reader in ("sql", "search"):
        if reader == "search":
            monkeypatch.setattr(tracking, "_sql_engine", lambda client: None)
        full_km = tracking.load_matrix("finetune", mlflow_client=store)
        probe_km = tracking.load_matrix("finetune", regime="linear-probe", mlflow_client=store)
        assert full_km.run_ids.loc[MODEL, task.name] == full_done.run_id
        assert full_km.values.loc[MODEL, task.name] == pytest.approx(full_done.score)
        assert probe_km.run_ids.loc[MODEL, task.name] == probe_done.run_id
        assert probe_km.values.loc[MODEL, task.name] == pytest.approx(probe_done.score)
    monkeypatch.undo()

    again = jobs.finetune_cells([MODEL], [task], config=full, mlflow_client=store)
    again += jobs.finetune_cells([MODEL], [task], config=probe, mlflow_client=store)
    assert [o.reused for o in again] == [True, True] and [o.run_id for o in again] == [full_done.run_id,
                                                                                       probe_done.run_id]


def test_runs_without_a_regime_read_as_full_and_keep_their_cell_key(store, monkeypatch):
    exp_id = tracking.experiment_id(store)
    legacy = tracking.write_run(store, exp_id, tracking.RunRecord(
        kind="finetune", model="m", task="t", cell="legacy", metrics={"test_accuracy": 0.7}))
    probe = tracking.write_run(store, exp_id, tracking.RunRecord(
        kind="finetune", model="m", task="u", cell="probe", tags={tracking.REGIME_TAG: "linear-probe"},
        metrics={"test_accuracy": 0.4}))
    for reader in ("sql", "search"):
        if reader == "search":
            monkeypatch.setattr(tracking, "_sql_engine", lambda client: None)
        full_km = tracking.load_matrix("finetune", mlflow_client=store)
        assert full_km.values.to_dict() == {"t": {"m": 0.7}} and full_km.run_ids.loc["m", "t"] == legacy
        probe_km = tracking.load_matrix("finetune", regime="linear-probe", mlflow_client=store)
        assert probe_km.values.to_dict() == {"u": {"m": 0.4}} and probe_km.run_ids.loc["m", "u"] == probe
    with pytest.raises(tracking.TrackingError, match="unknown fine-tune regime"):
        tracking.load_matrix("finetune", regime="partial", mlflow_client=store)
    with pytest.raises(tracking.TrackingError, match="finetune runs only"):
        tracking.load_matrix("fda", regime="linear-probe", mlflow_client=store)

    # a full fine-tune's identity is the one written before regimes existed: old stores resume and reuse
    model, task, config = load_model(MODEL, "random"), synthetic_task("shapes-4", samples_per_class=5), FinetuneConfig()
    before_regimes = tracking.cell_key(
        "finetune", model=model.name, weights=model.weights, task=task.name, task_fingerprint=task.fingerprint,
        learning_rates=list(config.learning_rates), weight_decays=list(config.weight_decays),
        batch_size=config.batch_size, momentum=config.momentum, max_epochs=config.max_epochs,
        patience=config.patience, augment=config.augment, seed=config.seed)
    assert jobs.finetune_cell_key(model, task, config) == before_regimes
    assert jobs.finetune_cell_key(model, task, replace(config, regime="linear-probe")) != before_regimes
