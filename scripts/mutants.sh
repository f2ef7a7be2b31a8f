#!/usr/bin/env bash
# Mutation testing of the security-critical code (docs/mutation.md): cargo-mutants changes one
# operator, constant or function body at a time in the files `.cargo/mutants.toml` lists, runs
# that package's tests, and each file must keep ≥ 90 % of its viable mutants caught.
#
#   scripts/mutants.sh --full          every selected mutant of every file (about 50 minutes here)
#   scripts/mutants.sh --ci            what CI runs (about 5 to 12 minutes): the mutants on
#                                      lines changed since the last full run (.ci/mutants-base),
#                                      and one file (or a shard of the engine's or the
#                                      transaction encoding's mutants) in full, in turn by
#                                      the commit count
#   scripts/mutants.sh --file PATH     one of the files in full
#
# Runs in place (cargo-mutants restores each file after its mutant), reusing target/debug: run
# it on a clean checkout. Prints the table per file and the missed mutants; exits 1 when a file
# is below 90 %. The results stay in target/mutants/.
set -euo pipefail
cd "$(dirname "$0")/.."

# scripts/deps.sh --test installs cargo-mutants (27.1.0) and python3.

mode=${1:---ci}
out=target/mutants
rm -rf "$out"
mkdir -p "$out"

# The listed files, from the config (the one place they are named).
mapfile -t files < <(python3 - <<'EOF'
import tomllib
with open(".cargo/mutants.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["examine_globs"]))
EOF
)
if [ ${#files[@]} -eq 0 ]; then
    echo "mutants: no files in .cargo/mutants.toml's examine_globs" >&2
    exit 2
fi

# A config narrowed to some of the files, with the same selection and exclusions.
narrowed() {
    python3 - "$out/config.toml" "$@" <<'EOF'
import json, sys, tomllib
with open(".cargo/mutants.toml", "rb") as f:
    c = tomllib.load(f)
c["examine_globs"] = sys.argv[2:]
with open(sys.argv[1], "w") as f:
    for k, v in c.items():
        f.write(f"{k} = {json.dumps(v)}\n")
EOF
}

# Exit codes of cargo-mutants: 0 all caught, 2 some missed, 3 some timed out; the score decides.
run() {
    local status=0
    cargo mutants --in-place --no-shuffle --baseline skip --timeout 300 --build-timeout 600 \
        --output "$out/$1" "${@:2}" || status=$?
    case $status in 0 | 2 | 3) ;; *) echo "cargo mutants failed ($status)" >&2; return 1 ;; esac
}

# A run with no mutant to test (a change only to tests or comments, an empty shard) writes no
# outcomes: nothing to score.
score() {
    local outcomes="$out/$1/mutants.out/outcomes.json"
    if [ ! -e "$outcomes" ]; then
        echo "no mutants to test"
        return 0
    fi
    python3 scripts/mutants-score.py "$outcomes" --min 90
}

case $mode in
    --full)
        run full
        score full
        ;;
    --file)
        path=${2:?--file needs a path}
        if ! printf '%s\n' "${files[@]}" | grep -qx -- "$path"; then
            echo "mutants: $path is not one of: ${files[*]}" >&2
            exit 2
        fi
        narrowed "$path"
        run file --config "$out/config.toml"
        score file
        ;;
    --ci)
        base=$(cat .ci/mutants-base)
        status=0
        if ! git cat-file -e "$base^{commit}" 2>/dev/null; then
            echo "mutants: the last full run's commit $base is not in this clone (a shallow one?)" >&2
            exit 2
        fi
        # Plain a/ b/ prefixes whatever the user's git configuration, as cargo-mutants reads them.
        git diff --no-color --no-ext-diff --src-prefix=a/ --dst-prefix=b/ "$base" -- "${files[@]}" \
            > "$out/changed.diff"
        if [ -s "$out/changed.diff" ]; then
            echo "== mutants on the lines changed since $base"
            run diff --in-diff "$out/changed.diff"
            score diff || status=1
        else
            echo "== no line of the listed files changed since $base"
        fi
        # The turns: each file, in shards where a file in full would take over about 7 minutes:
        # the engine (about 19 minutes) in four, the transaction encoding (about 14) in two.
        turns=()
        for f in "${files[@]}"; do
            case "$f" in
                consensus/src/engine.rs) shards=4 ;;
                ledger/src/tx.rs) shards=2 ;;
                *) shards=1 ;;
            esac
            if [ "$shards" -eq 1 ]; then
                turns+=("$f")
            else
                for ((i = 0; i < shards; i++)); do turns+=("$f $i/$shards"); done
            fi
        done
        turn=${turns[$(( $(git rev-list --count HEAD) % ${#turns[@]} ))]}
        read -r path shard <<< "$turn"
        echo "== $turn in full (one of ${#turns[@]} turns, by commit count)"
        narrowed "$path"
        run turn --config "$out/config.toml" ${shard:+--shard "$shard"}
        score turn || status=1
        exit $status
        ;;
    *)
        echo "usage: $0 [--ci | --full | --file PATH]" >&2
        exit 2
        ;;
esac
