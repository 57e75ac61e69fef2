"""Tests of the analysis package (analysis/) on a results file made by a small real
sweep: the frames, the CSV exports, the plots, the summary and bad files.

    GPFQ_BIN=build/gpfq /usr/bin/python3 -m pytest -q tests/python/test_analysis.py
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import analysis  # noqa: E402
from analysis import cli  # noqa: E402
from analysis.results import LAYER_COLUMNS, RESULT_COLUMNS, RESULT_EXTRA_COLUMNS  # noqa: E402

GPFQ = Path(os.environ.get("GPFQ_BIN", ROOT / "build" / "gpfq"))
TEST_DATA = GPFQ.parent / "tests" / "test_data"
MODEL = ROOT / "tests" / "fixtures" / "model_lenet_small.h5"
PYTHON = sys.executable
KINDS = ["scalar", "best", "bits", "lambda", "layers"]

JOB = """\
model: {model}
dataset:
  name: fashion-mnist
  data_dir: {data}
calibration:
  images: 32
output: {output}
eval:
  limit: 100
grid:
  method: [gpfq, msq]
  bits: [2, 4]
  scalar: [1.0, 1.5, 2.0]
  regularizer: [none, L1, L0]
  lambda: [0.01, 0.05]
"""
# a second run into the same file: an L0 lambda too large for the model's
# layers, recorded as a failed task
FAILING = ["--method", "gpfq", "-b", "4", "-s", "1.5", "-reg", "L0", "-l", "10"]


def run(args, **kw):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=120, **kw)


def task_ids(job, *overrides):
    """The task ids `gpfq sweep --dry-run` lists."""
    out = run([GPFQ, "sweep", "--dry-run", *overrides, job])
    assert out.returncode == 0, out.stderr
    return [line.split()[0] for line in out.stdout.splitlines()
            if re.match(r"^[0-9a-f]{16}\s", line)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Runs the sweep; returns (results file, ids of every task, ids of the failing run)."""
    if not GPFQ.exists() or not TEST_DATA.exists():
        pytest.skip(f"needs the built {GPFQ} and {TEST_DATA} (set GPFQ_BIN)")
    tmp = tmp_path_factory.mktemp("analysis")
    data, output, job = tmp / "fashion", tmp / "results.h5", tmp / "job.yaml"
    out = run([TEST_DATA, "--write-idx", data, 120])
    assert out.returncode == 0, out.stderr
    job.write_text(JOB.format(model=MODEL, data=data, output=output))
    for overrides in ([], FAILING):
        out = run([GPFQ, "sweep", *overrides, job], cwd=tmp)
        assert out.returncode == 0, out.stdout + out.stderr
    return output, task_ids(job) + task_ids(job, *FAILING), task_ids(job, *FAILING)


@pytest.fixture(scope="module")
def frames(sweep):
    return analysis.load(sweep[0])


def layer_count(model):
    with h5py.File(model, "r") as f:
        return sum(1 for node in f["nodes"].values()
                   if node.attrs["op"] in ("linear", "conv2d", b"linear", b"conv2d"))


def documented_columns(table):
    """Column names of a table in docs/results-format.md."""
    text = (ROOT / "docs" / "results-format.md").read_text()
    section = text.split(f"## `/{table}`", 1)[1].split("\n## ", 1)[0]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])
    return names


# --- the frames ----------------------------------------------------------------


def test_results_frame_has_one_row_per_task(frames, sweep):
    results, _ = frames
    path, ids, failing = sweep
    assert len(ids) == 61 and len(failing) == 1
    assert len(results) == len(ids)
    assert sorted(results["task_id"]) == sorted(ids)
    assert list(results.columns) == ["source", *RESULT_COLUMNS, *RESULT_EXTRA_COLUMNS]
    assert set(documented_columns("results")) <= set(results.columns)
    assert (results["source"] == str(path)).all()
    for column, dtype in analysis.RESULTS_DTYPES.items():
        assert str(results[column].dtype) == dtype, column
    # strings are decoded
    assert not any(isinstance(v, bytes) for v in results["task_id"])
    assert set(results["method"]) == {"gpfq", "msq"}
    assert set(results["quantizer"]) == {"nearest", "L1", "L0"}
    assert set(results["model"]) == {"model_lenet_small"}
    assert set(results["dataset"]) == {"fashion-mnist"}
    done = results[results["done"]]
    assert len(done) == 60
    np.testing.assert_allclose(done["drop_top1"], done["quant_top1"] - done["float_top1"])
    np.testing.assert_allclose(done["scalar"], done["mlp_scalar"])
    failed = results[~results["done"]]
    assert list(failed["task_id"]) == failing
    assert failed["status"].iloc[0] == "failed"
    assert np.isnan(failed["quant_top1"].iloc[0])
    assert "lambda 10" in failed["message"].iloc[0]


def test_layers_frame_has_one_row_per_layer_per_task(frames):
    results, layers = frames
    n = layer_count(MODEL)
    assert n == 5
    assert list(layers.columns)[:len(LAYER_COLUMNS) + 1] == ["source", *LAYER_COLUMNS]
    assert set(documented_columns("layers")) <= set(layers.columns)
    done = results[results["done"]]
    counts = layers.groupby("task_id")["layer"].agg(list)
    for task, method in zip(done["task_id"], done["method"]):
        assert counts[task] == list(range(n)), task
    gpfq = layers[layers["method"] == "gpfq"]
    assert len(gpfq) == n * int((done["method"] == "gpfq").sum())
    assert np.isfinite(gpfq["relative_error"]).all()
    assert (gpfq["relative_error"] > 0).all()
    # MSQ has no GPFQ error; a failed task has no layers
    assert layers.loc[layers["method"] == "msq", "relative_error"].isna().all()
    assert not layers["task_id"].isin(results.loc[~results["done"], "task_id"]).any()
    assert not any(isinstance(v, bytes) for v in layers["name"])


def test_load_several_files(sweep, tmp_path):
    copy = tmp_path / "copy.h5"
    shutil.copy(sweep[0], copy)
    results, layers = analysis.load([sweep[0], copy])
    assert len(results) == 2 * 61
    assert list(results["source"].unique()) == [str(sweep[0]), str(copy)]
    assert layers["source"].nunique() == 2


def test_job_text():
    text = """\
# a comment
model: /models/my_net.h5      # a path: its stem
dataset:
  name: FMNIST
  data_dir: /data
options:
  fold_bn: true
grid:
  bits: [2, 3]
"""
    assert analysis.job_info(text) == ("my_net", "fashion-mnist", True)
    simple = analysis.results._parse_job_simple(text)
    assert (simple["model"], simple["dataset"], simple["options"]) == \
        ("/models/my_net.h5", "FMNIST", {"fold_bn": True})
    assert analysis.job_info("model: lenet5\ndataset: cifar-10\n") == \
        ("lenet5", "cifar10", False)


# --- CSV -----------------------------------------------------------------------


def test_tidy_csv_round_trips(frames, tmp_path):
    results, layers = frames
    for frame, name in ((results, "results"), (layers, "layers")):
        path = tmp_path / f"{name}.csv"
        analysis.write_tidy_csv(frame, path)
        back = analysis.read_tidy_csv(path)
        pd.testing.assert_frame_equal(back, frame)
        # plain pandas gives the same values (int32 columns come back as int64)
        plain = pd.read_csv(path)
        assert list(plain.columns) == list(frame.columns)
        for c in frame.columns:
            if frame[c].dtype == object:
                assert list(plain[c].fillna("").astype(str)) == list(frame[c]), c
            else:
                np.testing.assert_allclose(plain[c].astype(float), frame[c].astype(float),
                                           equal_nan=True, err_msg=c)


def test_csv_command(sweep, frames, tmp_path):
    results, _ = frames
    research, tidy = tmp_path / "research.csv", tmp_path / "tidy.csv"
    out = run([PYTHON, "-m", "analysis", "csv", "--format", "research", "-o", research,
               sweep[0]], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "left out 1 failed task(s); 30 msq task(s)" in out.stdout
    header = research.read_text().splitlines()[0]
    assert header.split(",") == analysis.RESEARCH_COLUMNS
    assert header == ("Model Name,Dataset,Quantization Batch Size,Original Top1 Accuracy,"
                      "Quantized Top1 Accuracy,Original Top5 Accuracy,Quantized Top5 Accuracy,"
                      "Bits,MLP_Alphabet_Scalar,CNN_Alphabet_Scalar,MLP_Percentile,"
                      "CNN_Percentile,Stochastic Quantization,Regularizer,Lambda,"
                      "Original Sparsity,Quantized Sparsity,Retain_rate,Fusion,Seed")
    log = pd.read_csv(research)
    assert len(log) == 30  # the done GPFQ tasks
    assert set(log["Model Name"]) == {"model_lenet_small"}
    assert set(log["Dataset"]) == {"fashion-mnist"}
    assert set(log["Regularizer"]) == {"None", "L1", "L0"}
    assert set(log["Bits"]) == {2, 4}
    assert not log["Fusion"].any() and not log["Stochastic Quantization"].any()
    for c in ("Original Top1 Accuracy", "Quantized Top1 Accuracy", "Quantized Top5 Accuracy"):
        assert log[c].between(0, 1).all()
    assert (log["Quantization Batch Size"] == 32).all()

    out = run([PYTHON, "-m", "analysis", "csv", "--format", "tidy", "-o", tidy, sweep[0]],
              cwd=ROOT)
    assert out.returncode == 0, out.stderr
    pd.testing.assert_frame_equal(analysis.read_tidy_csv(tidy), results)


def test_research_frame_of_msq(frames):
    results, _ = frames
    msq = analysis.research_frame(results, "msq")
    assert list(msq.columns) == analysis.RESEARCH_COLUMNS
    assert len(msq) == 30
    assert len(analysis.research_frame(results, None)) == 60


# --- plots ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_plot_renders(frames, tmp_path, kind):
    results, layers = frames
    fn, needs_layers = analysis.PLOTS[kind]
    fig = fn(results, layers) if needs_layers else fn(results)
    assert fig.axes and all(ax.get_xlabel() for ax in fig.axes if ax.get_visible())
    paths = analysis.save_figure(fig, tmp_path, kind)
    assert [Path(p).name for p in paths] == [f"{kind}.png", f"{kind}.svg"]
    png, svg = (Path(p).read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 10000
    assert b"<svg" in svg[:1000] and len(svg) > 10000


def test_plot_kinds_match_the_command():
    assert list(analysis.PLOTS) == list(cli.KINDS) == KINDS


def test_plot_layers_of_chosen_tasks(frames):
    results, layers = frames
    gpfq = results[results["done"] & (results["method"] == "gpfq")]
    ids = list(gpfq["task_id"][:2])
    fig = analysis.plot_layers(results, layers, tasks=[ids[0], ids[1][:8]])
    assert len(fig.axes[0].get_lines()) == 2
    msq = results.loc[results["method"] == "msq", "task_id"].iloc[0]
    with pytest.raises(analysis.NoDataError, match="no per-layer error"):
        analysis.plot_layers(results, layers, tasks=[msq])
    with pytest.raises(analysis.NoDataError, match="no task id starts with 'zz'"):
        analysis.plot_layers(results, layers, tasks=["zz"])


def test_plots_without_their_data_say_so(frames):
    results, layers = frames
    one = results[(results["bits"] == 4) & (results["mlp_scalar"] == 1.5)]
    with pytest.raises(analysis.NoDataError, match="one scalar"):
        analysis.plot_scalar(one)
    with pytest.raises(analysis.NoDataError, match="one scalar"):
        analysis.plot_best(one)
    with pytest.raises(analysis.NoDataError, match="uses 4 bits"):
        analysis.plot_bits(one)
    with pytest.raises(analysis.NoDataError, match="no finished task with a regularizer"):
        analysis.plot_lambda(results[results["quantizer"] == "nearest"])
    with pytest.raises(analysis.NoDataError, match="per-layer errors"):
        analysis.plot_layers(results, layers.iloc[:0])


def test_plot_command(sweep, tmp_path):
    out = run([PYTHON, "-m", "analysis", "plot", "all", "-o", tmp_path / "all", sweep[0]],
              cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for kind in KINDS:
        for ext in ("png", "svg"):
            assert (tmp_path / "all" / f"{kind}.{ext}").stat().st_size > 10000

    # a file whose tasks are one configuration per method, without /layers:
    # nothing to draw, said clearly
    small = tmp_path / "small.h5"
    with h5py.File(sweep[0], "r") as src, h5py.File(small, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        rows = src["results"][()]
        keep = (rows["bits"] == 4) & (rows["mlp_scalar"] == 1.5) & (rows["regularizer"] == b"none")
        dst.create_dataset("results", data=rows[keep])
    out = run([PYTHON, "-m", "analysis", "plot", "lambda", "-o", tmp_path / "none", small],
              cwd=ROOT)
    assert out.returncode == 1
    assert "plot lambda: no finished task with a regularizer" in out.stderr
    assert not (tmp_path / "none").exists()
    assert "Traceback" not in out.stderr
    code = cli.main(["plot", "all", "-o", str(tmp_path / "none"), str(small)])
    assert code == 1
    assert not list((tmp_path / "none").glob("*.png"))


# --- summary -------------------------------------------------------------------


def test_summary(frames, sweep):
    results, _ = frames
    best = analysis.best_per_bits(results)
    assert list(zip(best["method"], best["bits"])) == [("gpfq", 2), ("gpfq", 4), ("msq", 2),
                                                       ("msq", 4)]
    for _, row in best.iterrows():
        group = results[results["done"] & (results["method"] == row["method"]) &
                        (results["bits"] == row["bits"])]
        assert row["quant_top1"] == group["quant_top1"].max()
        assert row["tasks"] == len(group)
    out = run([PYTHON, "-m", "analysis", "summary", sweep[0]], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"{sweep[0]}: model_lenet_small on fashion-mnist, 61 task(s), 60 done, 1 failed" in text
    assert re.search(r"float top-1 [0-9.]+%, top-5 [0-9.]+%", text)
    assert re.search(r"^\s+gpfq\s+2\s+\d+\s", text, re.M)
    assert "GPFQ - MSQ" in text and "failed tasks:" in text


# --- bad files -----------------------------------------------------------------


def bad_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not a results file\n")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["numbers"] = np.arange(3)
    return [
        (tmp_path / "missing.h5", "no such file"),
        (text, "not an HDF5 file"),
        (plain, "no /results table"),
        (MODEL, "is a gpfq-model file, not a sweep results file"),
    ]


def test_bad_files_raise_a_clear_error(tmp_path):
    for path, problem in bad_files(tmp_path):
        with pytest.raises(analysis.ResultsError) as err:
            analysis.load(path)
        assert str(err.value).startswith(f"{path}: ")
        assert problem in str(err.value)
        assert err.value.path == str(path)


def test_bad_files_in_the_command(sweep, tmp_path):
    for (path, problem), command in zip(bad_files(tmp_path)[:3],
                                        (["summary"], ["csv", "--format", "tidy", "-o",
                                                       str(tmp_path / "x.csv")],
                                         ["summary", str(sweep[0])])):
        out = run([PYTHON, "-m", "analysis", *command, path], cwd=ROOT)
        assert out.returncode == 1, out.stdout
        assert f"error: {path}: " in out.stderr and problem in out.stderr
        assert "Traceback" not in out.stderr


def test_help_and_usage_errors(capsys):
    for command in ([], ["summary"], ["csv"], ["plot"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*command, "--help"])
        assert exit_.value.code == 0
        assert "usage: python3 -m analysis" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plot", "pie", "-o", "x", "f.h5"])
    assert exit_.value.code == 2
    assert "invalid choice: 'pie'" in capsys.readouterr().err
