"""Collect ``outputs/<model>/eval/metrics.json`` of every model into one table and
``outputs/eval_summary.json``.

    python -m common.report [OUTPUTS_DIR]          (default: outputs)

Each metrics.json is flat: metric name -> number, plus ``protocol`` (metric -> description),
``model`` and ``checkpoint``. The table has one row per model and one column per metric; the protocol
of every metric is printed under it, and a metric measured under different protocols by different
models is flagged, since those numbers are not comparable.
"""
import glob
import json
import math
import os
import sys

from common.io import atomic_file

__all__ = ["collect", "format_table", "main"]

_META = ("model", "checkpoint", "protocol", "images")


def collect(outputs_dir):
    """-> list of metrics records, sorted by model name; errors name the unreadable file."""
    records = []
    for path in sorted(glob.glob(os.path.join(outputs_dir, "*", "eval", "metrics.json"))):
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {path}: {e}; re-run the evaluation of that model") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path} holds a {type(rec).__name__}, expected a JSON object")
        rec.setdefault("model", os.path.basename(os.path.dirname(os.path.dirname(path))))
        rec["source"] = path
        records.append(rec)
    return sorted(records, key=lambda r: r["model"])


def _metric_names(records):
    names = []
    for rec in records:
        names += [k for k, v in rec.items() if k not in _META + ("source",) and isinstance(v, (int, float))
                  and k not in names]
    return names


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return str(v)
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_table(records):
    """Markdown table: model | checkpoint | images | metrics..., then the protocol of each metric."""
    names = _metric_names(records)
    lines = ["| model | checkpoint | images | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for rec in records:
        lines.append(f"| {rec['model']} | {rec.get('checkpoint', '-')} | {rec.get('images', '-')} | "
                     + " | ".join(_fmt(rec.get(n)) for n in names) + " |")
    lines.append("")
    for n in names:
        protocols = sorted({rec.get("protocol", {}).get(n, "unstated") for rec in records if n in rec})
        flag = "  [WARNING: protocols differ between models; not comparable]" if len(protocols) > 1 else ""
        lines.append(f"- {n}: " + " || ".join(protocols) + flag)
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    outputs = argv[0] if argv else "outputs"
    if not os.path.isdir(outputs):
        raise SystemExit(f"outputs folder {outputs} does not exist; evaluate a model first (scripts/run_eval.sh)")
    records = collect(outputs)
    if not records:
        raise SystemExit(f"no {outputs}/<model>/eval/metrics.json found; evaluate a model first (scripts/run_eval.sh)")
    print(format_table(records))
    summary = os.path.join(outputs, "eval_summary.json")
    with atomic_file(summary) as tmp:
        with open(tmp, "w") as f:
            json.dump({"models": records, "metrics": _metric_names(records)}, f, indent=1, sort_keys=True)
    print(f"\nwrote {summary}")
    return records


if __name__ == "__main__":
    main()
