"""`photoscore models`: registered versions with their aliases, parity verdicts and test AUC."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list registered model versions", description=__doc__)
    p.add_argument("--name", default=None, help="only this registered model")
    p.set_defaults(handler=run)


def run(args, config) -> int:
    from models.registry import list_versions

    rows = list_versions(config, args.name)
    if not rows:
        print(f"no registered models in {config.tracking_uri}")
        return 0
    header = ("name", "version", "aliases", "model_type", "parity", "test_auc")
    table = [header] + [(r["name"], str(r["version"]), ",".join(r["aliases"]) or "-", r["model_type"],
                         r["parity"] + (f" ({r['parity_failed_exports']})" if r["parity_failed_exports"] else ""),
                         r["test_auc"] or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
