"""CSV export: the research code's log format and a tidy format of every column."""

import pandas as pd

from .results import LAYERS_DTYPES, RESULTS_DTYPES, file_info, job_info

# The research code's log columns, in order (as `gpfq quantize --log` writes them).
RESEARCH_COLUMNS = [
    "Model Name", "Dataset", "Quantization Batch Size", "Original Top1 Accuracy",
    "Quantized Top1 Accuracy", "Original Top5 Accuracy", "Quantized Top5 Accuracy", "Bits",
    "MLP_Alphabet_Scalar", "CNN_Alphabet_Scalar", "MLP_Percentile", "CNN_Percentile",
    "Stochastic Quantization", "Regularizer", "Lambda", "Original Sparsity",
    "Quantized Sparsity", "Retain_rate", "Fusion", "Seed",
]


def _g(x):
    return f"{x:g}"


def _fusion(sources):
    """{source: "True"/"False"}: whether the job folded batch norms (options: fold_bn)."""
    out = {}
    for s in sources:
        _, _, fold_bn = job_info(file_info(s).get("job", ""))
        out[s] = "True" if fold_bn else "False"
    return out


def research_frame(results, method="gpfq"):
    """The research code's log rows for the done tasks of one method.

    The log has no method column, so rows of one method only are written
    (`method=None` writes every method). Failed tasks have no accuracy and are
    left out. Numbers are formatted as `gpfq quantize --log` writes them:
    accuracies and sparsities as fractions, scalars and lambda with %g.
    """
    r = results[results["done"]]
    if method is not None:
        r = r[r["method"] == method]
    fusion = _fusion(r["source"].unique()) if len(r) else {}
    f4 = "{:.4f}".format
    f6 = "{:.6f}".format
    out = pd.DataFrame({
        "Model Name": r["model"],
        "Dataset": r["dataset"],
        "Quantization Batch Size": r["calib_images"].map(str),
        "Original Top1 Accuracy": r["float_top1"].map(f4),
        "Quantized Top1 Accuracy": r["quant_top1"].map(f4),
        "Original Top5 Accuracy": r["float_top5"].map(f4),
        "Quantized Top5 Accuracy": r["quant_top5"].map(f4),
        "Bits": r["bits"].map(str),
        "MLP_Alphabet_Scalar": r["mlp_scalar"].map(_g),
        "CNN_Alphabet_Scalar": r["cnn_scalar"].map(_g),
        "MLP_Percentile": r["mlp_percentile"].map(_g),
        "CNN_Percentile": r["cnn_percentile"].map(_g),
        "Stochastic Quantization": r["stochastic"].map(lambda s: "True" if s else "False"),
        "Regularizer": r["regularizer"].map(lambda g: g if g in ("L1", "L0") else "None"),
        "Lambda": r["reg_lambda"].map(_g),
        "Original Sparsity": r["float_sparsity"].map(f6),
        "Quantized Sparsity": r["quant_sparsity"].map(f6),
        "Retain_rate": r["retain_rate"].map(_g),
        "Fusion": r["source"].map(fusion),
        "Seed": r["seed"].map(str),
    }, columns=RESEARCH_COLUMNS)
    return out.reset_index(drop=True)


def write_research_csv(results, out, method="gpfq"):
    """Writes the research code's log (see research_frame); returns the rows written."""
    frame = research_frame(results, method)
    frame.to_csv(out, index=False)
    return len(frame)


def write_tidy_csv(frame, out):
    """Writes a frame from load() (results or layers) with every column, one row per
    task (or layer). read_tidy_csv() reads it back to an equal frame."""
    frame.to_csv(out, index=False)
    return len(frame)


def read_tidy_csv(path):
    """Reads a CSV written by write_tidy_csv back with the frame's dtypes: strings
    stay strings (an empty message stays ''; a task id of hex digits is not taken
    for a number), NaN accuracies of failed tasks stay NaN."""
    header = pd.read_csv(path, nrows=0).columns
    known = LAYERS_DTYPES if "layer" in header else RESULTS_DTYPES
    dtypes = {c: known[c] for c in header if c in known}
    floats = [c for c, t in dtypes.items() if t.startswith("float")]
    frame = pd.read_csv(path, dtype={c: t for c, t in dtypes.items() if t != "bool"},
                        keep_default_na=False,
                        na_values={c: ["", "nan", "NaN"] for c in floats})
    for c, t in dtypes.items():
        if t == "bool":
            frame[c] = frame[c].map({"True": True, "False": False, True: True, False: False})
            frame[c] = frame[c].astype(bool)
    return frame
