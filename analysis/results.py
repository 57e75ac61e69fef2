"""Reading sweep results files (docs/results-format.md) into pandas frames."""

import os
import re

# A running sweep keeps the file open for writing; HDF5's file locks would
# refuse a reader. Rows are flushed whole, so reading between flushes is safe
# (the same choice as `gpfq report --follow`). HDF5 reads this when a file is
# opened, so it must be set before the first open.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

FORMAT_NAME = "gpfq-results"
FORMAT_VERSION = 1

# The /results columns of format version 1, in file order, with the dtype each
# has in the frame (fixed-length strings become Python str).
RESULT_COLUMNS = {
    "task_id": "object",
    "method": "object",
    "bits": "int32",
    "mlp_scalar": "float64",
    "cnn_scalar": "float64",
    "mlp_percentile": "float64",
    "cnn_percentile": "float64",
    "regularizer": "object",
    "reg_lambda": "float64",
    "stochastic": "int32",
    "seed": "int64",
    "calib_images": "int64",
    "calib_mode": "object",
    "retain_rate": "float64",
    "float_top1": "float64",
    "float_top5": "float64",
    "quant_top1": "float64",
    "quant_top5": "float64",
    "float_sparsity": "float64",
    "quant_sparsity": "float64",
    "quantize_seconds": "float64",
    "eval_seconds": "float64",
    "total_seconds": "float64",
    "codes_hash": "uint64",
    "rank": "int32",
    "host": "object",
    "status": "object",
    "message": "object",
    "finished_at": "float64",
}

# Columns added from the job text and the columns above.
RESULT_EXTRA_COLUMNS = {
    "model": "object",  # the job's model: a shipped name, or a path's file stem
    "dataset": "object",  # canonical data set name
    "quantizer": "object",  # nearest, L1, L0 or stochastic
    "scalar": "float64",  # the alphabet scalar when mlp_scalar == cnn_scalar, else NaN
    "drop_top1": "float64",  # quant_top1 - float_top1 (fractions)
    "drop_top5": "float64",
    "done": "bool",  # status == "done"
}

LAYER_COLUMNS = {
    "task_id": "object",
    "layer": "int32",
    "name": "object",
    "rows": "int64",
    "cols": "int64",
    "samples": "int64",
    "delta": "float64",
    "error": "float64",
    "relative_error": "float64",
    "sparsity": "float64",
    "seconds": "float64",
}

# Task columns copied onto every layer row.
LAYER_TASK_COLUMNS = {
    "method": "object",
    "bits": "int32",
    "mlp_scalar": "float64",
    "cnn_scalar": "float64",
    "quantizer": "object",
    "reg_lambda": "float64",
    "quant_top1": "float64",
    "status": "object",
}

RESULTS_DTYPES = {"source": "object", **RESULT_COLUMNS, **RESULT_EXTRA_COLUMNS}
LAYERS_DTYPES = {"source": "object", **LAYER_COLUMNS, **LAYER_TASK_COLUMNS}

# Row order of the frames: by file (in the order given), then configuration.
_SORT = ["method", "bits", "mlp_scalar", "cnn_scalar", "mlp_percentile", "cnn_percentile",
         "quantizer", "reg_lambda", "seed", "task_id"]

_DATASET_ALIASES = {
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "fashion": "fashion-mnist",
    "mnist": "mnist", "cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10",
}


class ResultsError(Exception):
    """A results file that cannot be read: the message names the file and the problem."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class NoDataError(Exception):
    """The results hold nothing to draw or export for the request (the message says why)."""


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _strip_comment(value):
    return re.sub(r"\s+#.*$", "", value).strip().strip("\"'")


def _parse_job_simple(text):
    """model, dataset and options.fold_bn from a job's YAML text, line by line."""
    job = {"options": {}}
    section = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indented = line[0] in " \t"
        key, _, value = line.strip().partition(":")
        value = _strip_comment(value)
        if not indented:
            section = key
            if value:
                job[key] = value
        elif section == "dataset" and key == "name":
            job["dataset"] = value
        elif section == "options" and key == "fold_bn":
            job["options"]["fold_bn"] = value.lower() in ("true", "yes", "on", "1")
    return job


def parse_job(text):
    """The job file's text as a dict (PyYAML when installed, else a line parser
    that reads the keys the analysis needs: model, dataset, options.fold_bn)."""
    try:
        import yaml
    except ImportError:
        return _parse_job_simple(text)
    try:
        job = yaml.safe_load(text)
    except yaml.YAMLError:
        return _parse_job_simple(text)
    return job if isinstance(job, dict) else {}


def job_info(text):
    """(model, dataset, fold_bn) from a job's text."""
    job = parse_job(text or "")
    model = str(job.get("model") or "")
    if "/" in model or model.endswith(".h5"):
        model = os.path.splitext(os.path.basename(model))[0]
    dataset = job.get("dataset") or ""
    if isinstance(dataset, dict):
        dataset = dataset.get("name") or ""
    dataset = _DATASET_ALIASES.get(str(dataset).lower(), str(dataset))
    options = job.get("options") or {}
    fold_bn = options.get("fold_bn", False) if isinstance(options, dict) else False
    if isinstance(fold_bn, str):
        fold_bn = fold_bn.lower() in ("true", "yes", "on", "1")
    return model, dataset, bool(fold_bn)


def _table(path, f, name, columns):
    if name not in f:
        return None
    ds = f[name]
    if not isinstance(ds, h5py.Dataset) or ds.dtype.names is None or ds.ndim != 1:
        raise ResultsError(path, f"/{name} is not a one-dimensional table of records")
    missing = [c for c in columns if c not in ds.dtype.names]
    if missing:
        raise ResultsError(path, f"/{name} lacks the column(s) {', '.join(missing)}")
    try:
        data = ds[()]
    except (OSError, RuntimeError) as e:
        raise ResultsError(path, f"/{name} cannot be read ({e})") from None
    frame = pd.DataFrame({c: data[c] for c in ds.dtype.names})
    for c in frame.columns:
        if data.dtype[c].kind == "S":
            frame[c] = [v.split(b"\0", 1)[0].decode("utf-8", "replace") for v in data[c]]
            frame[c] = frame[c].astype(object)
    return frame.astype({c: t for c, t in columns.items()})


def _read_file(path):
    if not os.path.exists(path):
        raise ResultsError(path, "no such file")
    if os.path.isdir(path):
        raise ResultsError(path, "is a directory, not a results file")
    if not h5py.is_hdf5(path):
        raise ResultsError(path, "not an HDF5 file (a gpfq sweep results file is HDF5)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ResultsError(path, f"cannot be opened as HDF5 ({e}); truncated or corrupt?") from None
    with f:
        fmt = _text(f.attrs["gpfq_format"]) if "gpfq_format" in f.attrs else None
        if fmt is not None and fmt != FORMAT_NAME:
            raise ResultsError(path, f"is a {fmt} file, not a sweep results file "
                               f"(gpfq_format is '{fmt}', expected '{FORMAT_NAME}')")
        if "results" not in f:
            why = "no /results table"
            if fmt is None:
                why += f" and no gpfq_format='{FORMAT_NAME}' attribute"
            raise ResultsError(path, f"not a gpfq sweep results file ({why})")
        version = f.attrs.get("format_version")
        if version is not None and int(version) > FORMAT_VERSION:
            raise ResultsError(path, f"format_version {int(version)} is newer than this "
                               f"reader (version {FORMAT_VERSION})")
        results = _table(path, f, "results", RESULT_COLUMNS)
        layers = _table(path, f, "layers", LAYER_COLUMNS)
        if layers is None:
            layers = pd.DataFrame({c: pd.Series(dtype=t) for c, t in LAYER_COLUMNS.items()})
        job = _text(f.attrs["job"]) if "job" in f.attrs else ""
    return results, layers, job


def _decorate(results, path, job):
    model, dataset, _ = job_info(job)
    r = results.copy()
    r.insert(0, "source", str(path))
    r["model"] = model
    r["dataset"] = dataset
    quantizer = np.where(r["regularizer"].isin(["L1", "L0"]), r["regularizer"], "nearest")
    r["quantizer"] = np.where(r["stochastic"] != 0, "stochastic", quantizer)
    r["scalar"] = r["mlp_scalar"].where(r["mlp_scalar"] == r["cnn_scalar"])
    r["drop_top1"] = r["quant_top1"] - r["float_top1"]
    r["drop_top5"] = r["quant_top5"] - r["float_top5"]
    r["done"] = r["status"] == "done"
    return r.astype(RESULTS_DTYPES)


def load(paths):
    """Reads one or several sweep results files.

    Returns (results, layers): one row per task, and one row per quantized layer
    per task. `results` has a `source` column (the path as given), every /results
    column of docs/results-format.md with strings decoded, and the columns model,
    dataset (from the job text), quantizer (nearest, L1, L0, stochastic), scalar
    (NaN when mlp_scalar != cnn_scalar), drop_top1, drop_top5 and done. `layers`
    has source, the /layers columns and some of the task's columns (method, bits,
    scalars, quantizer, reg_lambda, quant_top1, status). A file that cannot be
    read raises ResultsError naming the file and the problem.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(dict.fromkeys(os.fspath(p) for p in paths))
    if not paths:
        raise ValueError("load() needs at least one results file")
    all_results, all_layers = [], []
    for path in paths:
        results, layers, job = _read_file(path)
        r = _decorate(results, path, job)
        r = r.sort_values(_SORT, kind="stable")
        all_results.append(r)
        layers.insert(0, "source", str(path))
        layers = layers.merge(r[["source", "task_id", *LAYER_TASK_COLUMNS]],
                              on=["source", "task_id"], how="left")
        all_layers.append(layers)
    results = pd.concat(all_results, ignore_index=True).astype(RESULTS_DTYPES)
    layers = pd.concat(all_layers, ignore_index=True)
    # tasks without a /results row (none in a consistent file) keep NaN there
    layers = layers.astype({c: t for c, t in LAYERS_DTYPES.items()
                            if not (t.startswith("int") and layers[c].isna().any())})
    order = {p: i for i, p in enumerate(paths)}
    task_order = {(s, t): i for i, (s, t) in enumerate(zip(results["source"], results["task_id"]))}
    key = [(order[s], task_order.get((s, t), len(task_order)), n)
           for s, t, n in zip(layers["source"], layers["task_id"], layers["layer"])]
    layers = layers.iloc[sorted(range(len(layers)), key=key.__getitem__)].reset_index(drop=True)
    return results, layers


def file_info(path):
    """Root attributes of a results file as a dict of str (for headers)."""
    with h5py.File(path, "r") as f:
        return {k: _text(v) for k, v in f.attrs.items()}
