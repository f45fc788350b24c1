#!/usr/bin/env bash
# Runs the brain-age loss-comparison sweep offline (6 presets x 3 seeds x 5-fold CV on the bundled
# fcon1000 table), reports it, and copies the report into docs/sweeps/brainage-presets/.
# From the repository root:  bash experiments/sweeps/brainage_presets_report.sh [--workers K]
# A second run reuses the finished trials (nothing is retrained) and only rewrites the report.
set -euo pipefail
usage="usage: bash experiments/sweeps/brainage_presets_report.sh [--workers K]"
workers=2
case "$#:${1:-}" in
    0:) ;;
    2:--workers) workers="$2" ;;
    1:--workers=*) workers="${1#--workers=}" ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
    echo "--workers must be a whole number >= 1, got '$workers'; $usage" >&2
    exit 2
fi
root="runs/sweeps"
start=$(date +%s)
sodeep sweep run experiments/sweeps/brainage_presets.yaml --root "$root" --workers "$workers"
echo "sweep: $(( $(date +%s) - start )) s with --workers $workers"
sodeep sweep report "$root/brainage-presets" --baseline losses=l1
mkdir -p docs/sweeps/brainage-presets
cp "$root/brainage-presets/report.md" "$root/brainage-presets/report.csv" docs/sweeps/brainage-presets/
cp -r "$root/brainage-presets/plots" docs/sweeps/brainage-presets/
echo "report copied to docs/sweeps/brainage-presets/"
