"""The fast REST path: request parsing without MLflow's per-column schema, and batching many tasks per request.

A small fitted recommender (no torch: random history with proxy features and facts) is logged
like ``fennec build`` does and served by the real ``mlflow models serve`` in a subprocess."""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from fennec_mlflow.core.recommender import Fennec
from fennec_mlflow.serving import flavor
from fennec_mlflow.store.knowledge import task_meta_row
from tests.helpers import sqlite_store, wait_for_scoring_server
from tests.serving.test_build_and_rank import free_port

PROXY_DIM = 6


def small_bundle(seed: int = 0) -> flavor.RankerBundle:
    rng = np.random.default_rng(seed)
    models = [f"net{i:02d}" for i in range(20)]
    tasks = [f"task{j}" for j in range(8)]
    P = pd.DataFrame(rng.random((20, 3)) @ rng.random((3, 8)), index=models, columns=tasks)
    model_meta = pd.DataFrame(rng.normal(size=(20, 3)), index=models, columns=["a", "b", "c"])
    task_meta = pd.DataFrame({"log_class_count": np.log(rng.integers(2, 100, 8)),
                              "log_sample_count": np.log(rng.integers(100, 10_000, 8)),
                              "domain=medical": (np.arange(8) % 2).astype(float)}, index=tasks)
    proxy = pd.DataFrame(rng.normal(size=(8, PROXY_DIM)), index=tasks,
                         columns=[f"proxy_{i}" for i in range(PROXY_DIM)])
    fennec = Fennec(k=2).fit(P, model_meta, task_meta, proxy)
    return flavor.RankerBundle(fennec=fennec, model_meta=model_meta,
                               model_parameters=pd.Series(np.arange(20) * 1e6, index=models),
                               domains=["medical"], task_meta_fill=task_meta.mean(), proxy_dim=PROXY_DIM,
                               encoder_spec="none")


def task_frame(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, PROXY_DIM)), columns=[f"proxy_{i}" for i in range(PROXY_DIM)])
    frame["class_count"] = rng.integers(2, 50, n).astype(float)
    frame["sample_count"] = np.where(np.arange(n) % 3 == 0, np.nan, 1000.0)
    frame["domain"] = np.where(np.arange(n) % 2 == 0, "medical", None)
    return frame


def test_vectorised_task_rows_equal_the_per_row_knowledge_rows():
    bundle = small_bundle()
    frame = task_frame(7)
    rows = flavor.fast_path_tasks(frame, bundle)
    for (proxy, meta), (_, row) in zip(rows, frame.iterrows()):
        expected = task_meta_row(row["class_count"], row["sample_count"], row["domain"], bundle.domains,
                                 bundle.task_meta_fill.index)
        pd.testing.assert_series_equal(meta, expected, check_names=False)
        np.testing.assert_array_equal(proxy, row[[f"proxy_{i}" for i in range(PROXY_DIM)]].to_numpy(dtype=float))


def test_a_domain_one_letter_off_is_refused_and_an_unknown_one_is_unknown():
    bundle = small_bundle()
    typo = task_frame(3).assign(domain=["medical", "medicl", None])
    with pytest.raises(flavor.RankRequestError, match="row 1: unknown domain 'medicl'; did you mean 'medical'"):
        flavor.fast_path_tasks(typo, bundle)
    rows = flavor.fast_path_tasks(task_frame(2).assign(domain=["satellite", None]), bundle)
    flavor.fast_path_tasks(task_frame(1).assign(domain=["medical, inverted"]), bundle)  # a domain of its own
    assert rows[0][1]["domain=medical"] == 0.0  # a new domain is a fact: unlike the history's
    assert np.isnan(rows[1][1]["domain=medical"])  # no domain: not known (not "another domain")
    with pytest.raises(flavor.RankRequestError, match="row 0: domain must be a text"):
        flavor.fast_path_tasks(task_frame(1).assign(domain=[5]), bundle)
    with pytest.raises(flavor.RankRequestError, match=r"row 0: class_count must be a whole number .* got 2.7"):
        flavor.fast_path_tasks(task_frame(1).assign(class_count=[2.7]), bundle)
    flavor.fast_path_tasks(task_frame(1).assign(class_count=[float(np.exp(np.log(3)))]), bundle)  # computed: 3


def test_a_domain_in_another_case_is_the_historys_and_a_new_one_is_said_in_the_basis():
    bundle = small_bundle()
    (_, meta), = flavor.fast_path_tasks(task_frame(1).assign(domain=[" Medical "]), bundle)
    assert meta["domain=medical"] == 1.0  # not refused as a typo of itself
    model = flavor.FennecRanker()
    model.bundle = bundle
    answer = model.predict(None, task_frame(2).assign(domain=["x-ray", "MEDICAL"]), {"top_k": 2})
    bases = answer.groupby("task_index")["basis"].first()
    assert "its domain is none of the history's (medical): taken as unlike them all" in bases[0]
    assert "none of the history's" not in bases[1]


def test_in_process_batch_equals_one_request_per_task_and_echoes_task_ids():
    model = flavor.FennecRanker()
    model.bundle = small_bundle()
    frame = task_frame(5).assign(task_id=[f"t-{i}" for i in range(5)])
    batch = model.predict(None, frame, {"top_k": 3})
    assert list(batch.columns) == ["task_index", "task_id", *flavor.OUTPUT_COLUMNS[1:]]
    assert list(batch["task_index"]) == [i for i in range(5) for _ in range(3)]
    for i in range(5):
        alone = model.predict(None, frame.drop(columns="task_id").iloc[[i]], {"top_k": 3})
        assert list(alone.columns) == flavor.OUTPUT_COLUMNS
        mine = batch[batch["task_id"] == f"t-{i}"].drop(columns=["task_index", "task_id"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone.drop(columns="task_index"), check_dtype=False)
    # one list-valued 'proxy' column is the same request as proxy_0..proxy_5
    packed = frame.drop(columns=[f"proxy_{i}" for i in range(PROXY_DIM)])
    packed["proxy"] = frame[[f"proxy_{i}" for i in range(PROXY_DIM)]].to_numpy().tolist()
    pd.testing.assert_frame_equal(model.predict(None, packed, {"top_k": 3}), batch)


def test_train_size_and_a_public_dataset_name_are_facts_too():
    from fennec_mlflow.core.evaluation import find_task_facts

    model = flavor.FennecRanker()
    model.bundle = small_bundle()
    frame = task_frame(3)
    expected = model.predict(None, frame, {"top_k": 3})
    aliased = model.predict(None, frame.rename(columns={"sample_count": "train_size"}), {"top_k": 3})
    pd.testing.assert_frame_equal(aliased, expected)
    food = find_task_facts("food101")
    named = frame.drop(columns=["class_count", "sample_count", "domain"]).assign(dataset="food101")
    spelled = frame.assign(class_count=float(food["class_count"]), sample_count=float(food["train_size"]),
                           domain=food["domain"])
    pd.testing.assert_frame_equal(model.predict(None, named, {"top_k": 3}),
                                  model.predict(None, spelled, {"top_k": 3}), check_dtype=False)
    sent = named.assign(class_count=7.0)  # the facts a row sends win over its dataset's
    pd.testing.assert_frame_equal(model.predict(None, sent, {"top_k": 3}),
                                  model.predict(None, spelled.assign(class_count=7.0), {"top_k": 3}), check_dtype=False)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.assign(train_size=5.0), "sample_count or its alias train_size, not both"),
    (lambda f: f.assign(dataset="no-such-dataset"), "row 0: no public dataset answers to 'no-such-dataset'"),
    (lambda f: f.assign(banana=1.0), "unknown column"),
    (lambda f: f.assign(class_count="many"), "class_count must be a number"),
    (lambda f: f.assign(class_count=1.0), r"class_count must be a whole number in \[2"),
    (lambda f: f.assign(sample_count=True), "sample_count must be a number"),
    (lambda f: f.assign(proxy_3="x"), "proxy_3 must be a number"),
    (lambda f: f.assign(proxy_0=np.inf), "NaN or inf"),
    (lambda f: f.drop(columns="proxy_5"), "missing"),
    (lambda f: f.iloc[:0], "no task rows"),
])
def test_request_checks_answer_with_our_message(change, message):
    model = flavor.FennecRanker()
    model.bundle = small_bundle()
    with pytest.raises(mlflow.exceptions.MlflowException, match=message) as error:
        model.predict(None, change(task_frame(3)), {"top_k": 3})
    assert error.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The small recommender registered in a temp store and served by `mlflow models serve`."""
    root = tmp_path_factory.mktemp("rest")
    with pytest.MonkeyPatch.context() as mp, sqlite_store(root, mp):
        uri = os.environ["MLFLOW_TRACKING_URI"]
        with mlflow.start_run():
            info = flavor.log_model(small_bundle(), registered_model_name=flavor.REGISTERED_NAME,
                                    input_example=task_frame(1).drop(columns="domain"))
        flavor.set_champion(info.registered_model_version)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/fennec@champion",
                                   "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
                                  env={**os.environ, "MLFLOW_TRACKING_URI": uri}, cwd=root,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            wait_for_scoring_server(server, port, opener)

            def post(payload: dict) -> tuple[int, dict]:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                                 data=json.dumps(payload).encode(),
                                                 headers={"Content-Type": "application/json"})
                try:
                    with opener.open(request, timeout=60) as answer:  # strict JSON: a bare NaN is refused
                        return answer.status, json.loads(answer.read(), parse_constant=refuse_constant)
                except urllib.error.HTTPError as failure:
                    return failure.code, json.loads(failure.read())

            yield post
        finally:
            server.terminate()
            server.wait(timeout=30)


def refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON: strict parsers refuse it")


def split(frame: pd.DataFrame) -> dict:
    body = json.loads(frame.to_json(orient="split"))
    body.pop("index", None)
    return body


@pytest.mark.slow
def test_one_rest_request_ranks_many_tasks_tagged_by_task_id(served):
    frame = task_frame(12).assign(task_id=[f"target-{i}" for i in range(12)])
    status, answer = served({"dataframe_split": split(frame), "params": {"top_k": 4}})
    assert status == 200, answer
    rows = pd.DataFrame(answer["predictions"])
    assert len(rows) == 12 * 4 and list(rows.columns[:3]) == ["task_index", "task_id", "rank"]
    assert (rows.groupby("task_id")["rank"].apply(list) == [[1, 2, 3, 4]] * 12).all()
    assert (rows["task_id"] == rows["task_index"].map(lambda i: f"target-{i}")).all()
    # each task's rows are what a request of that task alone answers
    for i in (0, 5, 11):
        status, alone = served({"dataframe_split": split(frame.drop(columns="task_id").iloc[[i]]),
                                "params": {"top_k": 4}})
        assert status == 200
        mine = rows[rows["task_index"] == i]
        assert list(mine["model"]) == [r["model"] for r in alone["predictions"]]
        np.testing.assert_allclose(mine["score"], [r["score"] for r in alone["predictions"]])
    # records with one list-valued 'proxy' column, facts left out: the same format as a batch
    records = [{"task_id": "x", "proxy": [0.1] * PROXY_DIM}, {"task_id": "y", "proxy": [0.2] * PROXY_DIM}]
    status, answer = served({"dataframe_records": records, "params": {"top_k": 2}})
    assert status == 200 and [r["task_id"] for r in answer["predictions"]] == ["x", "x", "y", "y"]


@pytest.mark.slow
def test_rest_without_an_input_schema_still_answers_bad_input_with_400(served):
    frame = task_frame(2)
    cases = [(frame.assign(class_count="many"), "class_count must be a number"),
             (frame.assign(banana=1.0), "unknown column"),
             (frame.drop(columns="proxy_0"), "proxy features"),
             (frame.iloc[:0], "no task rows")]
    for bad, message in cases:
        status, answer = served({"dataframe_split": split(bad)})
        assert status == 400 and message in answer["message"], answer
        assert "Failed to predict" not in answer["message"] and "\n" not in answer["message"], answer  # our line alone
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and "stack_trace" not in answer
    status, answer = served({"dataframe_split": split(frame), "params": {"top_k": "ten"}})
    assert status == 400  # params keep MLflow's schema checks
    status, answer = served({"dataframe_split": split(frame), "params": {"known_scores": {"net01": 0.9}}})
    assert status == 400 and "known_scores" in answer["message"]  # MLflow's schema: a string of JSON only


def test_the_scoring_servers_answer_is_strict_json_with_null_for_unknown_values(monkeypatch):
    """MLflow's scoring server writes the answer with json.dump, which writes NaN; strict parsers refuse it."""
    import types

    model = flavor.FennecRanker()
    model.bundle = small_bundle()  # no accuracy model, no profiles: those answers are unknown
    in_process = model.predict(None, task_frame(2), {"top_k": 3})
    assert in_process["predicted_accuracy"].isna().all() and in_process["latency_ms"].dtype == float
    monkeypatch.setitem(sys.modules, "mlflow.pyfunc.scoring_server.app", types.ModuleType("app"))  # as when served
    served = model.predict(None, task_frame(2), {"top_k": 3})
    records = json.loads(json.dumps(served.to_dict(orient="records")), parse_constant=refuse_constant)
    assert records[0]["predicted_accuracy"] is None and records[0]["known_score"] is None
    assert records[0]["score"] == pytest.approx(in_process["score"].iloc[0])


def test_unknown_known_scores_suggest_the_model_meant():
    model = flavor.FennecRanker()
    model.bundle = small_bundle()
    model.bundle.model_meta.index = [f"real:{name}" for name in model.bundle.model_meta.index]
    with pytest.raises(mlflow.exceptions.MlflowException,
                       match=r"does not know: 'net01' \(did you mean 'real:net01'\?\), 'vgg16'$"):
        model.predict(None, task_frame(1), {"known_scores": json.dumps({"net01": 0.9, "vgg16": 0.5})})
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"'real:net_05' \(did you mean 'real:net05'"):
        model.predict(None, task_frame(1), {"known_scores": json.dumps({"real:net_05": 0.9})})
    with pytest.raises(mlflow.exceptions.MlflowException, match="known_scores must be a string holding a JSON object"):
        model.predict(None, task_frame(1), {"known_scores": "[0.9]"})


def test_known_scores_in_percent_for_a_history_of_fractions_are_converted_or_refused():
    """Two percents told to a history of fractions were read in its spread: the two models stood 60
    z-scores apart. Converted, they rank as the same fractions would; a mix of scales is refused."""
    from fennec_mlflow.core.accuracy import AccuracyModel

    model = flavor.FennecRanker()
    model.bundle = small_bundle()
    fennec = model.bundle.fennec
    history = pd.DataFrame(fennec.task_mean_ + 0.05 * np.random.default_rng(0).normal(size=(20, 8)),
                           index=model.bundle.model_meta.index, columns=fennec.task_names_)
    model.bundle.accuracy = AccuracyModel().fit(history.clip(0.05, 0.95) / history.max().max())
    assert model.bundle.accuracy.available and model.bundle.accuracy.scale == 1.0
    fractions = model.predict(None, task_frame(1), {"top_k": 0, "known_scores": json.dumps({"net01": 0.91,
                                                                                         "net02": 0.935})})
    percents = model.predict(None, task_frame(1), {"top_k": 0, "known_scores": json.dumps({"net01": 91.0,
                                                                                        "net02": 93.5})})
    pd.testing.assert_frame_equal(percents.drop(columns="basis"), fractions.drop(columns="basis"))
    assert "known scores given in percent, read as fractions like the history's" in percents["basis"].iloc[0]
    assert percents["score"].abs().max() < 5
    with pytest.raises(mlflow.exceptions.MlflowException,
                       match=r"not accuracies on one scale; this recommender's history is in \[0, 1\]: give them so, "
                             r"e.g. '\{\"net00\": 0.91\}'"):
        model.predict(None, task_frame(1), {"known_scores": json.dumps({"net01": 91.0, "net02": 0.9})})
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"e.g. '\{\"net00\": 0.91\}'"):
        model.predict(None, task_frame(1), {"known_scores": "{net01: 0.9}"})


def test_max_parameters_without_any_parameter_count_says_so():
    model = flavor.FennecRanker()
    model.bundle = small_bundle()
    assert len(model.predict(None, task_frame(1), {"top_k": 0, "max_parameters": 5e6})) == 6  # 0, 1e6, ... 5e6
    model.bundle.model_parameters[:] = np.nan  # an imported table's models: no counts
    with pytest.raises(mlflow.exceptions.MlflowException,
                       match="max_parameters needs parameter counts, and none of the 20 candidates has one"):
        model.predict(None, task_frame(1), {"max_parameters": 5e6})


def test_a_dataset_asked_for_that_is_a_history_task_is_said_in_the_basis():
    """As `fennec rank --dataset` says it: the answer is Fennec's prediction, not the measured results."""
    model = flavor.FennecRanker()
    model.bundle = small_bundle()
    model.bundle.fennec.task_names_ = np.array(["oxford_pets", "dtd", "cifar10", "food101", "sun397", "cars",
                                                "aircraft", "flowers"], dtype=object)
    asked = task_frame(3).drop(columns=["class_count", "sample_count", "domain"])
    asked["dataset"], asked["task_id"] = ["Oxford-IIIT Pets", "dtd", "svhn"], ["a", "b", "c"]
    basis = model.predict(None, asked, {"top_k": 1}).set_index("task_id")["basis"]
    assert ("'Oxford-IIIT Pets' is the dataset of 'oxford_pets', one of this recommender's history tasks: its "
            "measured results were learned from") in basis["a"]
    assert "'dtd' is one of this recommender's history tasks" in basis["b"]
    assert "history tasks" not in basis["c"]


def test_blas_threads_are_left_alone_outside_the_scoring_server():
    from threadpoolctl import threadpool_info

    before = [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()]
    model = flavor.FennecRanker()
    model.bundle = small_bundle()
    model.predict(None, task_frame(1), {"top_k": 2})  # in process: no scoring app loaded
    assert [(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()] == before
