"""Build, register, load, serve and rank with real components: sqlite store, torch models, the scoring server."""
import json
from pathlib import Path
import os
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from fennec_mlflow import config
from fennec_mlflow.serving import demo
from fennec_mlflow.serving import flavor as pyfunc
from fennec_mlflow.store import tracking
from fennec_mlflow.store.archi2vec_runs import embed_architectures
from fennec_mlflow.store.jobs import proxy_cells, score_cells
from fennec_mlflow.data.proxy import load_encoder
from fennec_mlflow.serving.build import build
from fennec_mlflow.serving.rank import rank_task
from fennec_mlflow.data.synthetic import synthetic_task
from tests.helpers import run_entry_point, sqlite_store, wait_for_scoring_server
from tests.planted import planted_long_table, write_table

MODELS = ["resnet20_cifar10", "preresnet20_cifar10", "diaresnet20_cifar10", "nin_cifar10"]
HISTORY = ["digits-5class", "shapes-4", "gratings-orient-4", "blobs-count-3", "glyphs-upper-10"]
ENCODER = "zoo:resnet20_cifar10:random"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A small knowledge base (FDA + archi2vec + proxies) fitted and registered in a temp store."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp, sqlite_store(root, mp):
        uri = os.environ["MLFLOW_TRACKING_URI"]
        client = tracking.client(uri)
        tasks = [synthetic_task(name, samples_per_class=30) for name in HISTORY]
        score_cells(MODELS, tasks, weights="random", probe_size=60, mlflow_client=client, progress=False)
        embed_architectures(MODELS, mlflow_client=client, progress=False)
        encoder = load_encoder(ENCODER)
        proxy_cells(encoder, tasks, sample_size=60, mlflow_client=client, progress=False)
        result = build(kind="fda", encoder_spec=ENCODER, encoder_name=encoder.name, k=2)
        yield result, client, uri, root


def test_build_logs_a_fit_run_and_registers_the_champion(registered):
    result, client, _, _ = registered
    run = client.get_run(result.run_id)
    assert run.data.tags["fennec.kind"] == "fennec-fit"
    assert run.data.params["models"] == "4" and run.data.params["tasks"] == "5" and run.data.params["k"] == "2"
    assert run.data.metrics["fit_seconds"] > 0
    version = client.get_model_version_by_alias("fennec", "champion")
    assert str(version.version) == result.version and version.run_id == result.run_id
    assert result.knowledge.model_meta.shape[0] == 4 and "arch_0" in result.knowledge.model_meta
    # FDA history and no fine-tunes: nothing to validate on, and the version says so
    assert not result.quality.measured and "no finished finetune runs" in result.quality.reason
    assert version.tags["fennec.quality"] == "unmeasured" and "unmeasured" in version.description
    assert run.data.tags["fennec.quality"] == "unmeasured" and "validated_mean_pearson" not in run.data.metrics


def fast_request(result, task):
    proxy = result.knowledge.task_proxy.loc[task].to_numpy()
    frame = pd.DataFrame([proxy], columns=result.knowledge.task_proxy.columns)
    frame["class_count"] = 4.0
    frame["sample_count"] = 120.0
    return frame


def test_the_logged_model_carries_its_code_and_pinned_requirements(registered, tmp_path):
    """Served without this checkout: the package code ships in the model, requirements are all on PyPI."""
    import mlflow

    result, _, uri, _ = registered
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/fennec@champion", dst_path=str(tmp_path),
                                                     tracking_uri=uri))
    assert (local / "code" / "fennec_mlflow" / "serving" / "flavor.py").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert not [r for r in requirements if r.startswith("fennec")]
    assert any(r.startswith("torch==") for r in requirements) and any(r.startswith("mlflow==") for r in requirements)
    fast_request(result, "shapes-4").to_json(tmp_path / "frame.json", orient="split")
    code = (
        "import sys, json, pandas as pd\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]  # hide this checkout's install\n"
        f"sys.path[:] = [p for p in sys.path if not p.startswith({str(Path.cwd())!r})]\n"
        "import mlflow\n"
        f"model = mlflow.pyfunc.load_model({str(local)!r})\n"
        "import fennec_mlflow\n"
        f"frame = pd.read_json({str(tmp_path / 'frame.json')!r}, orient='split').astype(float)\n"
        "print(json.dumps([fennec_mlflow.__file__, len(model.predict(frame))]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    origin, rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert origin.startswith(str(local)) and rows > 0


def test_pyfunc_ranks_with_params(registered):
    result, _, _, _ = registered
    model = mlflow.pyfunc.load_model("models:/fennec@champion")
    ranking = model.predict(fast_request(result, "shapes-4"), params={"top_k": 3})
    assert list(ranking.columns) == pyfunc.OUTPUT_COLUMNS
    assert len(ranking) == 3 and list(ranking["rank"]) == [1, 2, 3]
    assert ranking["score"].is_monotonic_decreasing
    only_res = model.predict(fast_request(result, "shapes-4"), params={"include": "^resnet", "top_k": 0})
    assert list(only_res["model"]) == ["resnet20_cifar10"]
    small = model.predict(fast_request(result, "shapes-4"), params={"max_parameters": 300000.0, "top_k": 0})
    assert "nin_cifar10" not in set(small["model"]) and len(small) == 3
    warm = model.predict(fast_request(result, "shapes-4"),
                         params={"known_scores": json.dumps({"nin_cifar10": 0.9, "resnet20_cifar10": 0.2}), "top_k": 0})
    assert len(warm) == 4
    assert warm.set_index("model")["known_score"].dropna().to_dict() == {"nin_cifar10": 0.9, "resnet20_cifar10": 0.2}
    with pytest.raises(Exception, match="proxy features"):
        model.predict(pd.DataFrame({"class_count": [3.0]}))
    with pytest.raises(Exception, match="known_scores names models"):
        model.predict(fast_request(result, "shapes-4"), params={"known_scores": json.dumps({"vgg": 1.0})})


def test_images_are_encoded_inside_the_model(registered):
    model = mlflow.pyfunc.load_model("models:/fennec@champion")
    task = synthetic_task("shapes-outline-6", samples_per_class=10)
    frame = pd.DataFrame({"image": pyfunc.encode_image_files(task.images())})
    ranking = model.predict(frame, params={"top_k": 4})
    assert len(ranking) == 4 and set(ranking["model"]) <= set(MODELS)
    with pytest.raises(Exception, match="not a base64-encoded image"):
        model.predict(pd.DataFrame({"image": ["not an image"]}))
    # Two tasks' images in one request, told apart by task_id: each ranked as it is alone.
    other = synthetic_task(HISTORY[0], samples_per_class=10)
    both = pd.concat([frame.assign(task_id="outlines"),
                      pd.DataFrame({"image": pyfunc.encode_image_files(other.images()), "task_id": "history"})])
    answer = model.predict(both, params={"top_k": 4})
    assert answer.groupby("task_id")["task_index"].first().to_dict() == {"outlines": 0, "history": 1}
    alone = model.predict(both[both["task_id"] == "history"].drop(columns="task_id"), params={"top_k": 4})
    np.testing.assert_allclose(answer[answer["task_id"] == "history"]["score"], alone["score"])
    with pytest.raises(Exception, match="row 1: no task_id"):
        model.predict(frame.assign(task_id=["a", None, *["a"] * (len(frame) - 2)]))


def test_the_same_image_files_rank_alike_over_rest_and_from_a_folder(registered, tmp_path):
    """A user's folder ranked with `fennec rank --target` and the same files sent over REST: one
    loader, one proxy, one answer (the REST path had kept each file's own size)."""
    import base64

    import numpy as np
    from PIL import Image

    from fennec_mlflow.data.tasks import from_folder

    rng = np.random.default_rng(0)
    files = []
    for label in ("a", "b", "c"):
        (tmp_path / "mine" / label).mkdir(parents=True)
        for i in range(6):
            path = tmp_path / "mine" / label / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
            files.append(path)
    folder = rank_task(from_folder(tmp_path / "mine", image_size=config.IMAGE_SIZE), top_k=0, labels_known=False,
                       log=False)
    served = mlflow.pyfunc.load_model("models:/fennec@champion").predict(
        pd.DataFrame({"image": [base64.b64encode(path.read_bytes()).decode() for path in files]}),
        params={"top_k": 0})
    pd.testing.assert_series_equal(folder.set_index("model")["score"].sort_index(),
                                   served.set_index("model")["score"].sort_index(), check_exact=False, rtol=1e-6)


def test_rank_task_logs_a_rank_run(registered):
    _, client, _, _ = registered
    target = synthetic_task("shapes-outline-6", samples_per_class=20)
    ranking = rank_task(target, top_k=4)
    assert len(ranking) == 4 and ranking.attrs["in_history"] is None
    in_history = rank_task(synthetic_task(HISTORY[0], samples_per_class=20), top_k=1, log=False)
    assert in_history.attrs["in_history"] == HISTORY[0]
    [run] = tracking.runs_of_kind("rank", mlflow_client=client)
    assert run.data.tags["fennec.task"] == "shapes-outline-6"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"ranking.csv", "ranking.png", "ranking.json"}


def test_cli_rank_with_known_scores_recommends_the_best_model_not_yet_scored(registered, tmp_path):
    """A model the user already fine-tuned is no recommendation, even when it ranks first."""
    from click.testing import CliRunner

    from fennec_mlflow.cli import main

    known = {"nin_cifar10": 0.9, "resnet20_cifar10": 0.2}
    result = CliRunner().invoke(main, ["rank", "--target", "shapes-outline-6", "--top-k", "0",
                                       "--known-scores", json.dumps(known), "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    written = pd.read_json(tmp_path / "r.json", orient="records")
    assert sorted(written["model"]) == sorted(MODELS) and written.set_index("model")["known_score"].dropna().to_dict() \
        == known
    advice = next(line for line in result.output.splitlines() if line.startswith("Of the models not yet scored"))
    untried = [m for m in MODELS if m not in known]
    assert any(f"fine-tune {m!r} next" in advice for m in untried)
    assert "(your best so far: 'nin_cifar10', known score 0.9)" in advice
    assert "known_score" in result.output and "first." not in result.output
    # the columns in one line under the table; the paragraph explaining each lives on the rank run
    assert ("= bias_score + transfer_score + meta_score when cold; the known scores move the others and place "
            "each told model at its measured value; the rank run's description (mlflow ui) explains every "
            "column.") in result.output
    assert "latency_ms / peak_memory_mb: measured" not in result.output
    latest = max(tracking.runs_of_kind("rank", mlflow_client=registered[1]), key=lambda run: run.info.start_time)
    assert "latency_ms / peak_memory_mb: measured" in latest.data.tags["mlflow.note.content"]


def test_cli_rank_warm_starts_from_the_targets_fine_tunes_in_the_store(registered):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main

    _, client, _, _ = registered
    told = {"nin_cifar10": 0.61, "resnet20_cifar10": 0.42, "not-a-candidate": 0.9}  # the last is not ranked
    tracking.write_runs(client, tracking.experiment_id(client, "known-test"), [tracking.RunRecord(
        kind="finetune", model=model, task="shapes-outline-6", cell=f"ft-{model}",
        metrics={tracking.MATRIX_METRIC["finetune"]: value}) for model, value in told.items()])
    result = CliRunner().invoke(main, ["rank", "--target", "shapes-outline-6", "--top-k", "0", "--known-from-store",
                                       "--experiment", "known-test"])
    assert result.exit_code == 0, result.output
    assert "note: 2 fine-tune(s) of 'shapes-outline-6' found in experiment 'known-test'" in result.output
    assert "(your best so far: 'nin_cifar10', known score 0.61)" in result.output
    [run] = tracking.runs_of_kind("rank", experiment="known-test", mlflow_client=client)
    assert "2 known scores" in run.data.params["basis"]  # propagated or not, the ranking was told them


def test_cli_rank_places_a_task_by_its_facts_where_the_recommender_reads_no_images(registered):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main

    refused = CliRunner().invoke(main, ["rank", "--train-size", "500", "--class-count", "10"])
    assert refused.exit_code == 2 and "places a task by its images" in refused.output


def test_cli_rank_by_facts_on_a_table_only_store(store, tmp_path):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main

    import_planted(tmp_path)
    before = CliRunner().invoke(main, ["rank", "--dataset", "food101"])  # nothing registered: no demo for facts
    assert before.exit_code == 2 and "build one from your table first" in before.output
    built = planted_build(tune=False)  # no encoder: a new task is placed by its facts
    example = mlflow.models.Model.load(built.model_uri).load_input_example()  # the request format, in the UI
    assert list(example.columns) == ["class_count", "sample_count", "domain"] and len(example) == 1
    result = CliRunner().invoke(main, ["rank", "--train-size", "500", "--class-count", "10", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert "for 'new-task' (by its facts: 10 classes, 500 training images, domain unknown" in result.output
    assert "Fine-tune 'net" in result.output
    # an imported table's models were never profiled, and the table does not say what its scores measured
    header = next(line for line in result.output.splitlines() if line.split()[:2] == ["rank", "model"])
    assert "predicted_accuracy" in header and "latency_ms" not in header and "licence" not in header
    assert "Predicted accuracy of 'net" in result.output and "Predicted fine-tune accuracy" not in result.output
    unknown = CliRunner().invoke(main, ["rank", "--dataset", "no-such-dataset"])
    assert unknown.exit_code == 2 and "nor public dataset answers to 'no-such-dataset'" in unknown.output
    no_target = CliRunner().invoke(main, ["rank"])  # the demo's image task means nothing to a facts-only model
    assert no_target.exit_code == 2 and "Traceback" not in no_target.output
    assert no_target.output.strip().splitlines()[-1] == (
        "error: the recommender models:/fennec@champion places a task by its facts (built with --encoder none): "
        "give --dataset NAME or the task's facts (--train-size, with --class-count and --domain when known)")
    classes_only = CliRunner().invoke(main, ["rank", "--class-count", "10"])
    assert classes_only.exit_code == 2 and classes_only.output.strip().endswith(
        "(--class-count alone does not: add --train-size)")
    both = CliRunner().invoke(main, ["rank", "--dataset", "food101", "--target", str(tmp_path)])
    assert both.exit_code == 2 and "not both" in both.output


def test_cli_rank_finds_a_dataset_among_the_tasks_the_store_imported(store, tmp_path):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main

    table = planted_long_table(n_tasks=5).replace({"task": {"task2": "my_xray_dataset"}})
    import_table_file(write_table(table, tmp_path / "mine.csv"), source="mine")
    build(kind="external", source="mine", truth_source="mine", tune=False)
    facts = table[table["task"] == "my_xray_dataset"].iloc[0]
    result = CliRunner().invoke(main, ["rank", "--dataset", "My-Xray Dataset", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert (f"for 'my_xray_dataset' (by its facts: {facts['task_class_count']} classes, "
            f"{facts['task_train_size']} training images, domain {facts['task_domain']}") in result.output
    assert "is one of this recommender's history tasks" in result.output
    given = CliRunner().invoke(main, ["rank", "--dataset", "my_xray_dataset", "--class-count", "7"])
    assert given.exit_code == 0 and "(by its facts: 7 classes" in given.output  # the command line wins
    # A second table spelling the same dataset another way is the same dataset, not a clash.
    import_table_file(write_table(table.replace({"task": {"my_xray_dataset": "My-Xray-Dataset"}}),
                                  tmp_path / "theirs.csv"), source="theirs")
    again = CliRunner().invoke(main, ["rank", "--dataset", "My Xray Dataset", "--top-k", "3"])
    assert again.exit_code == 0, again.output
    assert f"{facts['task_train_size']} training images" in again.output


def import_table_file(path, source: str, experiment: str = tracking.DEFAULT_EXPERIMENT) -> None:
    from fennec_mlflow.store.external import import_table

    import_table(path, source=source, experiment=experiment, progress=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_rest_requests(registered):
    result, _, uri, root = registered
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/fennec@champion",
                               "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root)
    local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP(S)_PROXY
    try:
        wait_for_scoring_server(server, port, local)
        frame = fast_request(result, "gratings-orient-4")
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split"), "params": {"top_k": 2}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(local.open(request, timeout=60).read())
        rows = answer["predictions"]
        assert len(rows) == 2 and rows[0]["rank"] == 1 and rows[0]["model"] in MODELS
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     data=json.dumps({"dataframe_split": {"columns": ["class_count"], "data": [[3]]}}).encode(),
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as error:
            local.open(bad, timeout=60)
        answer = json.loads(error.value.read().decode())
        # a project error is the client's fault: 400, our message at the top level, no traceback
        assert error.value.code == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "proxy features" in answer["message"] and "stack_trace" not in answer
        for name, payload, content_type, expected in malformed_requests(frame):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=payload,
                                             headers={"Content-Type": content_type})
            start = time.time()
            try:
                status = local.open(request, timeout=30).status
            except urllib.error.HTTPError as failure:
                status = failure.code
            assert status in expected, (name, status)
            assert time.time() - start < 30, name
    finally:
        server.terminate()
        server.wait(timeout=30)


def malformed_requests(frame: pd.DataFrame):
    """(name, body, content type, acceptable statuses): never a 500, never a hang."""
    import base64
    import io

    from PIL import Image

    def body(data: pd.DataFrame | dict, **params) -> bytes:
        split = data.to_dict(orient="split") if isinstance(data, pd.DataFrame) else data
        split.pop("index", None)
        return json.dumps({"dataframe_split": split, "params": params}).encode()

    def image_frame(*texts) -> dict:
        return {"columns": ["image"], "data": [[t] for t in texts]}

    huge = io.BytesIO()
    Image.new("L", (5000, 5000)).save(huge, format="PNG")
    ours = (400,)  # the project's own checks
    cases = [
        ("bad include regex", body(frame, include="("), ours),
        ("bad exclude regex", body(frame, exclude="["), ours),
        ("include matches nothing", body(frame, include="^zzz$"), ours),
        ("known_scores not JSON", body(frame, known_scores="not json"), ours),
        ("known_scores unknown model", body(frame, known_scores='{"nosuch": 1}'), ours),
        ("known_scores a list", body(frame, known_scores="[1, 2]"), ours),
        ("known_scores not a number", body(frame, known_scores='{"resnet20_cifar10": "x"}'), ours),
        ("top_k negative", body(frame, top_k=-5), ours),
        ("top_k huge", body(frame, top_k=10 ** 12), ours),
        ("top_k text", body(frame, top_k="abc"), (400,)),
        ("max_parameters negative", body(frame, max_parameters=-1.0), ours),
        ("max_parameters text", body(frame, max_parameters="x"), (400,)),
        ("class_count negative", body(frame.assign(class_count=-5.0)), ours),
        ("class_count huge", body(frame.assign(class_count=1e308)), ours),
        ("sample_count negative", body(frame.assign(sample_count=-1.0)), ours),
        ("class_count text", body(frame.assign(class_count="many")), (400,)),
        ("proxy infinite", body(frame.assign(proxy_0=1e309)), (400,)),
        ("too many rows", body(pd.concat([frame] * 1001, ignore_index=True)), ours),
        ("image not base64", body(image_frame("!!!")), ours),
        ("image not an image", body(image_frame(base64.b64encode(b"hello").decode())), ours),
        ("image too large", body(image_frame(base64.b64encode(huge.getvalue()).decode())), ours),
        ("no proxy columns", body({"columns": ["class_count"], "data": [[3.0]]}), ours),
        ("row of the wrong length", body({"columns": list(frame.columns), "data": [[1.0]]}), (400,)),
        ("empty frame", body({"columns": list(frame.columns), "data": []}), (200, 400)),
        ("unknown column only", body({"columns": ["banana"], "data": [[1.0]]}), (400,)),
        ("domain a number", body(frame.assign(domain=5)), (200, 400)),
        ("empty JSON object", b"{}", (400,)),
        ("broken JSON", b"{", (400,)),
        ("not JSON at all", b"\x00\xff garbage", (400,)),
        ("plain text content type", body(frame), (400, 415)),
        ("unknown param", body(frame, banana=1), (200, 400)),
        ("instances of garbage", json.dumps({"instances": [[1, 2, 3]]}).encode(), (400,)),
    ]
    return [(name, payload, "text/plain" if name == "plain text content type" else "application/json", expected)
            for name, payload, expected in cases]


@pytest.mark.slow
def test_mlflow_run_rank_entry_point_uses_the_champion(registered):
    _, client, uri, root = registered
    done = run_entry_point("rank", {"top_k": 3}, cwd=root, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert f"Top 3 models to fine-tune for {demo.DEFAULT_TARGET!r}" in done.stdout
    assert len(tracking.runs_of_kind("rank", mlflow_client=client)) >= 1


# --------------------------------------------------------------------------- validation on the store's ground truth

def import_planted(tmp_path, n_tasks: int = 5) -> str:
    from fennec_mlflow.store.external import import_table

    import_table(write_table(planted_long_table(n_tasks=n_tasks), tmp_path / "planted.csv"), source="planted",
                 progress=False)
    return "planted"


def planted_build(**kwargs):
    """Learn from the imported table (no images: no encoder), validated on the same table."""
    return build(kind="external", source="planted", truth_source="planted", **kwargs)


def test_rank_says_which_shown_models_rest_on_a_single_history_task(store, tmp_path):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main
    from fennec_mlflow.store.external import import_table

    table = planted_long_table(n_tasks=5)
    solo = table[table["task"] == "task0"].head(1).assign(model="solo-baseline", score=99.0)  # measured once, best
    import_table(write_table(pd.concat([table, solo]), tmp_path / "planted.csv"), source="planted", progress=False)
    planted_build(tune=False)
    ranked = CliRunner().invoke(main, ["rank", "--dataset", "task0", "--top-k", "0"])
    assert ranked.exit_code == 0, ranked.output
    assert "note: 'solo-baseline' is scored on 1 history task only: its place rests on that alone" in ranked.output
    assert ranked.output.count("is scored on") == 1  # the others have several


def test_build_registers_the_paper_formulation_when_asked_and_validates_it_as_such(store, tmp_path):
    import_planted(tmp_path)
    paper = planted_build(tune=False, formulation="paper")
    assert paper.fennec.formulation == "paper"
    run = store.get_run(paper.run_id)
    assert run.data.params["formulation"] == "paper"
    shrunk = planted_build(tune=False, register=False)
    assert shrunk.fennec.formulation == "shrunk"
    # each is validated as it is served: the two figures are their own leave-one-task-out means
    assert paper.quality.validation.validated_mean_pearson != shrunk.quality.validation.validated_mean_pearson


def test_champion_moves_only_to_a_version_validated_at_least_as_well(store, tmp_path):
    import_planted(tmp_path, n_tasks=9)  # each fold keeps 8 history tasks: enough for the facts' interaction to prove itself
    unmeasured = build(kind="external", source="planted", truth_source="not-imported")
    assert unmeasured.alias == "champion" and not unmeasured.quality.measured
    assert "not-imported" in unmeasured.quality.reason
    # no --truth-source and no finetune runs in the store: the imported table is its own ground truth
    untold = build(kind="external", source="planted", tune=False, register=False)
    assert untold.quality.measured and untold.quality.truth == "external:planted"
    assert untold.regime is None  # the table does not say whether its scores are full fine-tunes or probes
    good = planted_build(tune=False)  # Fennec's defaults, measured by plain leave-one-task-out
    assert good.quality.measured and good.alias == "champion" and "was unmeasured" in good.alias_reason
    worse = planted_build(tune=False, alpha=0.0, shrinkage=0.0)  # no interaction: similar-task popularity
    assert worse.alias == "challenger" and worse.model_uri == "models:/fennec@challenger"
    assert worse.quality.validation.validated_mean_pearson < good.quality.validation.validated_mean_pearson
    assert str(store.get_model_version_by_alias("fennec", "champion").version) == good.version
    assert str(store.get_model_version_by_alias("fennec", "challenger").version) == worse.version
    again = build(kind="external", source="planted", truth_source="not-imported")
    assert again.alias == "challenger" and "this version is unmeasured" in again.alias_reason
    champion = store.get_model_version_by_alias("fennec", "champion")
    assert str(champion.version) == good.version and champion.tags["fennec.quality"] == "validated"
    assert float(champion.tags["fennec.validated_mean_pearson"]) == pytest.approx(
        good.quality.validation.validated_mean_pearson, abs=1e-6)
    assert "Validated on the store's external:planted ground truth (9 targets" in champion.description
    # the version's own input example is a request it answers (counts logged as whole numbers)
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts("models:/fennec@champion")
    example = Model.load(local).load_input_example(local)
    assert "class_count" in example and len(mlflow.pyfunc.load_model(local).predict(example, params={"top_k": 2})) == 2
    # without images the registered model ranks a new task from its facts
    ranking = mlflow.pyfunc.load_model("models:/fennec@champion").predict(
        pd.DataFrame({"class_count": [50.0], "sample_count": [5000.0]}), params={"top_k": 3})
    assert len(ranking) == 3 and ranking["model"].str.startswith("net").all()


def test_figures_validated_on_another_ground_truth_never_move_the_champion(store, tmp_path):
    import_planted(tmp_path)
    ours = planted_build(tune=False)
    import_table_file(write_table(planted_long_table(n_tasks=4, seed=3), tmp_path / "mine.csv"), source="mine")
    theirs = build(kind="external", source="mine", truth_source="mine", tune=False)
    assert theirs.alias == "challenger" and theirs.quality.measured
    assert theirs.alias_reason == (
        f"the champion (version {ours.version}) was validated on external:planted (5 targets), this version on "
        "external:mine (4 targets), so their figures are not comparable; the champion stays (move the alias by "
        "hand if this one should serve)")
    assert str(store.get_model_version_by_alias("fennec", "champion").version) == ours.version
    again = planted_build(tune=False, alpha=0.0, shrinkage=0.0)  # the same ground truth: the figures compare
    assert again.alias_reason.startswith("validated ") and "vs the champion's" in again.alias_reason
    grown = planted_long_table(n_tasks=6)  # the store grew by a task: the champion's 5 targets are among the 6
    grown = pd.concat([planted_long_table(n_tasks=5), grown[grown["task"] == "task5"]])  # theirs as they were
    import_table_file(write_table(grown, tmp_path / "planted.csv"), source="planted")
    grown = planted_build(tune=False)
    assert grown.alias_reason.startswith("validated ") and "vs the champion's" in grown.alias_reason


def test_a_version_reading_other_input_never_takes_over_the_champion(store, tmp_path):
    """A table's facts-only recommender built into the image recommender's name would make every
    image request to the champion fail: it is the challenger until it gets a name of its own."""
    from fennec_mlflow.serving.build import INPUT_TAG, _input_of

    import_planted(tmp_path)
    first = planted_build(tune=False)
    assert store.get_model_version("fennec", first.version).tags[INPUT_TAG] == "task facts"
    assert _input_of(store, first.run_id) == "task facts"  # what versions registered before the tag read
    store.set_model_version_tag("fennec", first.version, INPUT_TAG, "images")  # as the embedded default's
    facts = planted_build(tune=False)
    assert facts.alias == "challenger" and facts.alias_reason.startswith(
        f"the champion (version {first.version}) places a task by its images, this version by its task facts")
    assert "--registered-model NAME" in facts.alias_reason
    assert str(store.get_model_version_by_alias("fennec", "champion").version) == first.version


def test_a_champion_validated_on_cells_since_corrected_gives_way(store, tmp_path):
    """A corrected table: the champion's figure was measured on values that no longer hold, so it is
    no figure to beat; the version validated on the current table takes over, and says why."""
    from fennec_mlflow.store.external import import_table

    import_planted(tmp_path)
    planted_build(tune=False)
    same = planted_build(tune=False, alpha=0.0, shrinkage=0.0)  # unchanged table: the figures compare
    assert same.alias_reason.startswith("validated ")
    corrected = planted_long_table(n_tasks=5)
    corrected.loc[0, "score"] += 7.0
    import_table(write_table(corrected, tmp_path / "planted.csv"), source="planted", progress=False)
    champion = store.get_model_version_by_alias("fennec", "champion").version
    after = planted_build(tune=False, alpha=0.0, shrinkage=0.0)
    assert after.alias == "champion" and after.alias_reason == (
        f"the champion (version {champion}) was validated on external:planted as it was then; 1 of those "
        "cells have changed or gone since, so its figure no longer holds and this version, validated on the "
        "current table, takes over")


def test_rank_warns_when_cells_the_recommender_learned_from_have_changed_or_gone_since_it_was_built(store, tmp_path):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main
    from fennec_mlflow.store.external import import_table

    import_planted(tmp_path)
    planted_build(tune=False)
    args = ["rank", "--train-size", "500", "--class-count", "10", "--top-k", "3"]
    fresh = CliRunner().invoke(main, args)
    assert fresh.exit_code == 0 and "changed or been deleted" not in fresh.output
    corrected = planted_long_table(n_tasks=5)
    corrected.loc[0, "score"] += 7.0  # one cell corrected, another model's row dropped with --replace
    other = corrected["model"] == corrected["model"].iloc[-1]
    import_table(write_table(corrected[~other], tmp_path / "planted.csv"), source="planted", replace=True,
                 progress=False)
    gone = int(other.sum())
    stale = CliRunner().invoke(main, args)
    assert stale.exit_code == 0, stale.output
    assert (f"warning: {1 + gone} cell(s) of the external:planted matrix this recommender learned from have changed "
            "or been deleted in the store since it was built") in stale.output
    rank_run = store.get_run(store.search_runs([tracking.experiment_id(store, tracking.DEFAULT_EXPERIMENT)],
                                               "tags.`fennec.kind` = 'rank'", order_by=["start_time DESC"])[0].info.run_id)
    assert rank_run.data.tags["fennec.history_changed_cells"] == str(1 + gone)
    planted_build(tune=False)
    assert "changed or been deleted" not in CliRunner().invoke(main, args).output  # rebuilt on the store as it is


def test_a_version_validated_below_popularity_is_warned_about():
    from types import SimpleNamespace

    from fennec_mlflow.cli import below_popularity_warning

    worse = SimpleNamespace(validated_mean_pearson=0.727, popularity_mean_pearson=0.746)
    assert below_popularity_warning(worse) == (
        "warning: this version ranks its own validation targets worse than popularity (72.7 vs 74.6); recommending "
        "the most popular models would serve better here")
    assert below_popularity_warning(SimpleNamespace(validated_mean_pearson=0.8, popularity_mean_pearson=0.7)) is None
    # served popularity itself, a fit of it may differ in the fourth digit: "87.2 vs 87.2" would read as nonsense
    level = SimpleNamespace(validated_mean_pearson=0.87194, popularity_mean_pearson=0.87203)
    assert below_popularity_warning(level) is None


def test_a_build_from_another_experiment_never_takes_over_the_champion(store, tmp_path):
    """Registered models are global in MLflow; a figure validated on another experiment's ground
    truth is not comparable, so that build is a challenger until it gets a name of its own."""
    from fennec_mlflow.store.external import import_table

    import_planted(tmp_path)
    ours = planted_build(tune=False)
    import_table(write_table(planted_long_table(n_tasks=5, seed=1), tmp_path / "other.csv"), source="planted",
                 experiment="other", progress=False)
    other = planted_build(tune=False, experiment="other")
    assert other.alias == "challenger" and "built from experiment 'fennec', not 'other'" in other.alias_reason
    assert str(store.get_model_version_by_alias("fennec", "champion").version) == ours.version
    apart = planted_build(tune=False, experiment="other", registered_model="fennec-other")
    assert apart.alias == "champion" and apart.model_uri == "models:/fennec-other@champion"
    assert str(store.get_model_version_by_alias("fennec", "champion").version) == ours.version


@pytest.mark.slow
def test_build_tunes_on_enough_ground_truth_and_logs_the_honest_figures(store, tmp_path):
    import_planted(tmp_path, n_tasks=8)  # enough history tasks for the facts' interaction to prove itself
    result = planted_build(n_trials=3, inner_trials=2)
    validation = result.quality.validation
    assert validation.method.startswith("nested cross-validation") and validation.n_trials == 3
    run = store.get_run(result.run_id)
    metrics = run.data.metrics
    assert metrics["validated_mean_pearson"] == pytest.approx(validation.validated_mean_pearson)
    assert metrics["popularity_mean_pearson"] == pytest.approx(validation.popularity_mean_pearson)
    assert metrics["validated_targets"] == 8 and metrics["tuning_seconds"] > 0
    assert run.data.params["tuned"] == "True" and run.data.params["shrinkage"] == str(validation.params["shrinkage"])
    assert run.data.tags["fennec.quality"] == "validated" and "Validated" in run.data.tags["mlflow.note.content"]
    assert {"validation_trials.csv", "validation_folds.csv"} <= {a.path for a in store.list_artifacts(result.run_id)}
    # the planted re-ordering follows the facts: the honest figure clearly beats popularity
    assert validation.validated_mean_pearson > validation.popularity_mean_pearson + 0.2
    version = store.get_model_version_by_alias("fennec", "champion")
    assert str(version.version) == result.version and version.tags["fennec.validation"] == validation.method


def test_cli_build_says_when_quality_is_measured_or_not(store, tmp_path):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main

    import_planted(tmp_path, n_tasks=4)
    common = ["build", "--kind", "external", "--source", "planted", "--encoder", "none", "--no-tune"]
    result = CliRunner().invoke(main, [*common, "--truth-source", "planted"])
    assert result.exit_code == 0, result.output
    assert "validated on the store's external:planted ground truth, 4 targets" in result.output
    assert "registered models:/fennec@champion version 1" in result.output
    result = CliRunner().invoke(main, common)  # no fine-tunes in the store: the table is its own ground truth
    assert result.exit_code == 0 and "validated on the store's external:planted ground truth" in result.output
    assert "predicts full fine-tune accuracy" not in result.output  # a linear probe's table would be mislabelled
    result = CliRunner().invoke(main, [*common, "--truth-source", "not-imported"])
    assert result.exit_code == 0 and "ranking quality unmeasured: no usable ground truth" in result.output
    bad = CliRunner().invoke(main, [*common, "--shrinkage", "2"])
    assert bad.exit_code == 2 and "--shrinkage" in bad.output
    # A published table's tasks have no images: asked for no encoder, the build places tasks by their facts
    imageless = CliRunner().invoke(main, ["build", "--kind", "external", "--source", "planted", "--no-tune"])
    assert imageless.exit_code == 0, imageless.output
    assert "tasks have no images here (e.g. 'task0'): new tasks are placed by their facts" in imageless.output
    asked = CliRunner().invoke(main, ["build", "--kind", "external", "--source", "planted", "--no-tune",
                                      "--encoder", "demo"])
    assert asked.exit_code != 0 and "--encoder none places new tasks by their facts" in asked.output


def test_rank_without_a_fennec_champion_names_the_recommenders_you_registered(store, tmp_path):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main

    import_planted(tmp_path, n_tasks=4)
    built = CliRunner().invoke(main, ["build", "--kind", "external", "--source", "planted", "--encoder", "none",
                                      "--no-tune", "--registered-model", "mine"])
    assert built.exit_code == 0, built.output
    ranked = CliRunner().invoke(main, ["rank", "--dataset", "cifar10"])
    assert ranked.exit_code != 0
    assert "no recommender is registered as models:/fennec@champion; pass one of yours with --model-uri: " \
           "models:/mine@champion" in ranked.output


def test_knowledge_can_be_restricted_to_some_models_and_tasks(registered):
    from fennec_mlflow.store.knowledge import build_knowledge

    _, client, _, _ = registered
    encoder = load_encoder(ENCODER).name
    knowledge = build_knowledge(models=MODELS[:3], tasks=HISTORY[:4], encoder=encoder, mlflow_client=client)
    assert knowledge.P.shape == (3, 4) and list(knowledge.task_proxy.index) == HISTORY[:4]
    with pytest.raises(tracking.TrackingError, match="no fda runs for model"):
        build_knowledge(models=["vgg11"], mlflow_client=client)


def test_a_target_named_by_its_dataset_is_found_among_history_tasks_named_otherwise():
    from fennec_mlflow.serving.rank import TaskFacts, history_task_of

    history = ["aircraft", "pets", "task7"]
    assert history_task_of(TaskFacts("Oxford-IIIT Pets", 37, 3680), history) == "pets"
    assert history_task_of(TaskFacts("FGVC-Aircraft", 100, 6667), history) == "aircraft"
    assert history_task_of(TaskFacts("task7", 10, 500), history) == "task7"
    assert history_task_of(TaskFacts("Food-101", 101, 75750), history) is None


def test_a_folder_target_finds_its_fine_tunes_by_its_folder_not_by_its_name(registered, tmp_path):
    """/mine/pets and /other/pets are both task 'pets': the other's fine-tunes are not this target's; a link is."""
    from fennec_mlflow.data.task_specs import load_task
    from fennec_mlflow.errors import InvalidInputError
    from tests.helpers import image_folder

    _, client, _, _ = registered
    mine, other = image_folder(tmp_path / "mine" / "pets", 0), image_folder(tmp_path / "other" / "pets", 1)
    (tmp_path / "linked").symlink_to(mine)
    stored = load_task(f"folder:{mine}")
    told = {"nin_cifar10": 0.61, "resnet20_cifar10": 0.42}
    tracking.write_runs(client, tracking.experiment_id(client, "folders-test"), [tracking.RunRecord(
        kind="finetune", model=model, task="pets", cell=f"ft-{model}", metrics={"test_accuracy": value},
        params={"task_source": stored.source, "task_fingerprint": stored.fingerprint}) for model, value in told.items()])
    with pytest.raises(InvalidInputError, match=f"fine-tunes of task 'pets' are of another folder, {mine}, not of "
                                                f"{other} .*; rank without --known-from-store"):
        rank_task(load_task(f"folder:{other}", unlabelled_ok=True), known_from_store=True, experiment="folders-test",
                  log=False)
    linked = rank_task(load_task(str(tmp_path / "linked"), unlabelled_ok=True), known_from_store=True, top_k=0,
                       experiment="folders-test", log=False)
    assert linked.attrs["known_from_store"] == 2
    assert linked.set_index("model")["known_score"].dropna().to_dict() == told


def test_history_tasks_are_matched_by_the_data_the_store_gave_them(registered, tmp_path):
    """A folder named like a history task is not that task; a link to a history folder is."""
    from fennec_mlflow.serving.rank import TaskFacts, history_task_of

    history = ["pets", "leaves"]
    folder = TaskFacts("linked", 3, 36, source="folder:/data/pets")
    assert history_task_of(folder, history, same_data=["pets"]) == "pets"  # the store calls its folder 'pets'
    assert history_task_of(TaskFacts("pets", 3, 36), history, namesake="folder:/else/pets") is None
    assert history_task_of(TaskFacts("pets", 3, 36), history) == "pets"
    # CLI: a one-class folder named like the history's synthetic task 'shapes-4'
    from click.testing import CliRunner

    from fennec_mlflow.cli import main
    from tests.helpers import image_folder

    target = image_folder(tmp_path / HISTORY[1], 0, classes=("all",))
    result = CliRunner().invoke(main, ["rank", "--target", str(target), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    assert (f"note: this recommender's history task {HISTORY[1]!r} is other images of that name "
            f"(synthetic:{HISTORY[1]}), not this folder") in result.output
    assert "is one of this recommender's history tasks" not in result.output
    assert f"note: {HISTORY[1]!r} has a single class folder ('all'): its images are ranked as unlabelled" in result.output


def test_cli_profile_measures_the_registered_recommenders_candidates_by_default(registered):
    from click.testing import CliRunner

    from fennec_mlflow.cli import main

    result = CliRunner().invoke(main, ["profile", "--repeats", "1", "--experiment", "profile-test"])
    assert result.exit_code == 0, result.output
    assert f"profiling {len(MODELS)} model(s): the candidates of models:/fennec@champion" in result.output
    assert f"{len(MODELS)} measured, 0 reused" in result.output
