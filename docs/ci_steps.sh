#!/usr/bin/env bash
# The steps of docs/ci-example.yml after `pip install`: compile a model for a board, gate
# it, package it, and smoke-test the bundle. tests/package/test_ci_example.py runs this
# same script, so the example cannot drift from what works.
#
#   docs/ci_steps.sh MODEL DEVICE OUT [extra edgec compile flags...]
#
# Writes OUT/run (the compile), OUT/gate.xml and OUT/gate.md (the verdicts, also in
# $GITHUB_STEP_SUMMARY on GitHub), OUT/bundle (what to upload). Exit codes are edgec's:
# 3 when a budget fails (the report and the verdicts are still written; no bundle).
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: $0 MODEL DEVICE OUT [edgec compile flags...]" >&2
  exit 2
fi
model=$1 device=$2 out=$3
shift 3
python=${PYTHON:-python}

# 1. compile for the board: its profile picks target, precision, threads and budgets;
#    flags given here override them. A failed budget (exit 3) still writes the report.
status=0
edgec compile "$model" --device "$device" --out "$out/run" "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
  exit "$status"
fi

# 2. gate: re-judge the report by the budgets it was compiled with; JUnit and Markdown
#    for the CI's test view and job summary. Exit 3 (and ::error annotations) on a breach.
edgec gate "$out/run/report.json" --junit "$out/gate.xml" --markdown "$out/gate.md"

# 3. package for the board: model files, manifest.json with sha256 of each, run.py.
edgec package "$out/run" --device "$device" --out "$out/bundle"

# 4. smoke-test the bundle as the board would run it: hashes, then one inference.
"$python" "$out/bundle/run.py" --check
"$python" "$out/bundle/run.py" > "$out/bundle-smoke.txt"
echo "bundle: $out/bundle"
