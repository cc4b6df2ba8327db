"""``python -m common.prepare DATASET SRC DST [--key=value ...]``: exit 0 when everything was prepared,
1 when some input was bad (the report names the files), 2 for unusable arguments or sources."""
import sys

from common.prepare import DATASETS, RUN_OPTIONS, dataset_module, prepare
from common.prepare.core import PrepareError


def usage():
    lines = [__doc__.split(":")[0].strip("`"), "", "datasets and their options:"]
    for name in DATASETS:
        module = dataset_module(name)
        lines.append(f"  {name}: {module.__doc__.splitlines()[0]}")
        lines += [f"      --{k}={v[0]}  {v[1]}" for k, v in module.OPTIONS.items()]
    lines.append("  every dataset:")
    lines += [f"      --{k}={v[0]}  {v[1]}" for k, v in RUN_OPTIONS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if len(argv) < 3:
        print(usage(), file=sys.stderr)
        return 2
    try:
        report = prepare(argv[0], argv[1], argv[2], argv[3:])
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
