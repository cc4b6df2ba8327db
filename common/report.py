"""Collect ``outputs/<model>/eval/metrics.json`` of every model into one table and
``outputs/eval_summary.json``.

    python -m common.report [OUTPUTS_DIR]          (default: outputs)

Each metrics.json is in the schema of :func:`common.metrics.evaluate.write_metrics_json`
(``synthzoo.metrics/1``). The table has one row per model and one column per metric (settings such as
``k`` or ``num_val`` are listed under it, never as columns); under it come the protocol of every metric,
the metrics that were not computed with the flag that enables them, and each model's settings. A metric
measured under different protocols by different models is flagged, since those numbers are not comparable.
"""
import glob
import json
import os
import sys

from common.io import atomic_file
from common.metrics.evaluate import SCHEMA

__all__ = ["SUMMARY_SCHEMA", "collect", "format_table", "main"]

SUMMARY_SCHEMA = "synthzoo.eval_summary/1"


def _check(rec, path):
    """Validate one metrics.json record; errors name the file and the fix."""
    if not isinstance(rec, dict):
        raise ValueError(f"{path} holds a {type(rec).__name__}, expected a JSON object")
    if rec.get("schema") != SCHEMA:
        raise ValueError(f"{path} has schema {rec.get('schema')!r}, expected {SCHEMA!r} (a metrics.json from an "
                         f"older version); re-run the evaluation of that model")
    for section in ("metrics", "settings", "not_computed"):
        if not isinstance(rec.get(section), dict):
            raise ValueError(f"{path}: '{section}' is missing or not an object; re-run the evaluation of that model")
    for name, entry in rec["metrics"].items():
        if not (isinstance(entry, dict) and "value" in entry and "protocol" in entry):
            raise ValueError(f"{path}: metric {name} is {entry!r}, expected {{\"value\": ..., \"protocol\": ...}}")


def collect(outputs_dir):
    """-> list of metrics records (plus ``source``: the file), sorted by model name; errors name the file."""
    records = []
    for path in sorted(glob.glob(os.path.join(outputs_dir, "*", "eval", "metrics.json"))):
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {path}: {e}; re-run the evaluation of that model") from None
        _check(rec, path)
        rec["source"] = path
        records.append(rec)
    return sorted(records, key=lambda r: r["model"])


def _metric_names(records):
    """Metric columns: computed metrics in order of appearance, then metrics only listed as not computed."""
    names = [n for rec in records for n in rec["metrics"]]
    names += [n for rec in records for n in rec["not_computed"]]
    return list(dict.fromkeys(names))


def _cell(rec, name):
    if name in rec["metrics"]:
        v = rec["metrics"][name]["value"]
        return "null" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
    return "not computed" if name in rec["not_computed"] else "-"


def format_table(records):
    """Markdown table (model | checkpoint | images | metrics...), then protocols, gaps and settings."""
    names = _metric_names(records)
    lines = ["| model | checkpoint | images | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for rec in records:
        images = "-" if rec.get("images") is None else rec["images"]
        lines.append(f"| {rec['model']} | {rec.get('checkpoint') or '-'} | {images} | "
                     + " | ".join(_cell(rec, n) for n in names) + " |")
    lines.append("")
    for n in names:
        protocols = sorted({rec["metrics"][n]["protocol"] for rec in records if n in rec["metrics"]})
        if protocols:
            flag = "  [WARNING: protocols differ between models; not comparable]" if len(protocols) > 1 else ""
            lines.append(f"- {n}: " + " || ".join(protocols) + flag)
    gaps = {}  # (metrics, reason) -> models
    for rec in records:
        by_reason = {}
        for n, reason in rec["not_computed"].items():
            by_reason.setdefault(reason, []).append(n)
        for reason, ns in by_reason.items():
            gaps.setdefault((", ".join(ns), reason), []).append(rec["model"])
    if gaps:
        lines += ["", "Not computed:"]
        lines += [f"- {ns} ({', '.join(models)}): {reason}" for (ns, reason), models in gaps.items()]
    settings = [rec for rec in records if rec["settings"]]
    if settings:
        lines += ["", "Settings:"]
        lines += [f"- {rec['model']}: " + ", ".join(f"{k}={v}" for k, v in rec["settings"].items()) for rec in settings]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return None
    outputs = argv[0] if argv else "outputs"
    if not os.path.isdir(outputs):
        raise SystemExit(f"outputs folder {outputs} does not exist; evaluate a model first (scripts/run_eval.sh)")
    try:
        records = collect(outputs)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if not records:
        raise SystemExit(f"no {outputs}/<model>/eval/metrics.json found; evaluate a model first (scripts/run_eval.sh)")
    print(format_table(records))
    summary = os.path.join(outputs, "eval_summary.json")
    with atomic_file(summary) as tmp:
        with open(tmp, "w") as f:
            json.dump({"schema": SUMMARY_SCHEMA, "models": records, "metrics": _metric_names(records)}, f,
                      indent=1, sort_keys=True, allow_nan=False)
    print(f"\nwrote {summary}")
    return records


if __name__ == "__main__":
    main()
