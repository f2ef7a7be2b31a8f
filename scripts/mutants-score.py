#!/usr/bin/env python3
"""Scores a cargo-mutants run per file: mutants, caught, missed, timeouts, unviable, and the
score = (caught + timeouts) / (caught + missed + timeouts). A mutant that makes the tests hang
is one the tests noticed (they did not pass); an unviable mutant (it does not build) says
nothing and is left out, as cargo-mutants itself does.

Usage: mutants-score.py OUTCOMES_JSON [--min PERCENT] [--markdown FILE]

Prints the table and every missed mutant; exits 1 when a file scores below --min, 2 when the
outcomes cannot be read."""

import argparse
import collections
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("outcomes")
    ap.add_argument("--min", type=float, default=90.0)
    ap.add_argument("--markdown", help="also write the table here")
    a = ap.parse_args()
    try:
        with open(a.outcomes, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        print(f"mutants-score: {a.outcomes}: {e}", file=sys.stderr)
        return 2
    per_file = collections.defaultdict(collections.Counter)
    missed = []
    for o in data.get("outcomes", []):
        scenario = o.get("scenario")
        if not isinstance(scenario, dict) or "Mutant" not in scenario:
            continue  # the baseline
        m = scenario["Mutant"]
        per_file[m["file"]][o["summary"]] += 1
        if o["summary"] == "MissedMutant":
            missed.append(m["name"])
    rows = ["| file | mutants | caught | missed | timeouts | unviable | score |",
            "|---|---|---|---|---|---|---|"]
    low = []
    for path in sorted(per_file):
        c = per_file[path]
        caught, miss, hang = c["CaughtMutant"], c["MissedMutant"], c["Timeout"]
        unviable = c["Unviable"]
        viable = caught + miss + hang
        score = 100.0 * (caught + hang) / viable if viable else 100.0
        if score < a.min:
            low.append(f"{path} {score:.1f} %")
        rows.append(f"| {path} | {sum(c.values())} | {caught} | {miss} | {hang} | {unviable} | "
                    f"{score:.1f} % |")
    table = "\n".join(rows)
    print(table)
    if a.markdown:
        with open(a.markdown, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    if not per_file:
        print("no mutants examined")
    for name in missed:
        print(f"MISSED {name}")
    if low:
        print(f"below {a.min:.0f} %: " + "; ".join(low), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
