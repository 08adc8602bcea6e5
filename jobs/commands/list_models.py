"""`photoscore models`: registered versions with their aliases, parity verdicts and test AUC;
`--parity` adds the parity matrix (max |export - native| per export, against each tolerance);
`--history` prints the audit trail instead: who moved which alias or rollout, when, from, to, why."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list registered model versions", description=__doc__)
    p.add_argument("--name", default=None, help="only this registered model")
    p.add_argument("--parity", action="store_true",
                   help="also print the parity matrix of every version (downloads its bundle)")
    p.add_argument("--history", action="store_true",
                   help="the audit trail (promote, rollback, rollout set/stop, canary ended), oldest first")
    p.add_argument("--json", action="store_true", help="with --history: one JSON event per line")
    p.set_defaults(handler=run)


def _print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def parity_cell(cell: dict | None) -> str:
    """One matrix cell: `1.2e-07 ok`, `0.12 FAILED (tol 1e-06)`, or `n/a` with no number."""
    if not cell or cell.get("status") == "not_available":
        return "n/a"
    diff = cell.get("max_abs_diff")
    shown = f"{diff:.1e}" if isinstance(diff, (int, float)) else "?"
    if cell.get("status") == "passed":
        return f"{shown} ok"
    return f"{shown} FAILED (tol {cell.get('tolerance')})"


def print_history(settings, name: str | None, as_json: bool) -> int:
    """The audit trail of `name` (or of every registered model), oldest first."""
    from jobs.rollout_view import event_line
    from models.registry import client
    from models.rollouts import history

    names = [name] if name else sorted(m.name for m in client(settings).search_registered_models())
    events = sorted(({**event, "model_name": n} for n in names for event in history(settings, n)),
                    key=lambda e: e["at_ms"])
    for event in events:
        print(json.dumps(event, sort_keys=True) if as_json else event_line(event))
    if not events and not as_json:
        print(f"no audit events for {name or 'any registered model'} in {settings.tracking_uri}")
    return 0


def run(args, settings) -> int:
    from models.registry import list_versions

    if args.history:
        return print_history(settings, args.name, args.json)
    rows = list_versions(settings, args.name)
    if not rows:
        print(f"no registered models in {settings.tracking_uri}")
        return 0
    header = ("name", "version", "aliases", "model_type", "parity", "test_auc")
    _print_table([header] + [(r["name"], str(r["version"]), ",".join(r["aliases"]) or "-", r["model_type"],
                              r["parity"] + (f" ({r['parity_failed_exports']})" if r["parity_failed_exports"] else ""),
                              r["test_auc"] or "-") for r in rows])
    if args.parity:
        from models.registry import resolve_bundle
        from udfs.bundle import read_parity_report
        from udfs.formats import all_formats, stored_cell

        gated = [f.id for f in all_formats() if not f.reference]
        print("\nparity matrix: max |export - native| on held-out + adversarial rows (n/a: no such export)")
        matrix = [("name", "version", "model_type", *gated)]
        for r in rows:
            _, _, bundle = resolve_bundle(f"models:/{r['name']}/{r['version']}", settings, allow_failed_parity=True)
            exports = read_parity_report(bundle)["exports"]
            matrix.append((r["name"], str(r["version"]), r["model_type"],
                           *(parity_cell(stored_cell(exports, fmt)) for fmt in gated)))
        _print_table(matrix)
    return 0
