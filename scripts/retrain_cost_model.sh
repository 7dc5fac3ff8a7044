#!/usr/bin/env bash
# Profile a cluster's device kinds (resuming whatever the dataset already holds) and refit the
# XGBoost cost model.   bash scripts/retrain_cost_model.sh CLUSTER.json MODEL_OUT.json [DATASET] [MODELS...]
set -euo pipefail
cluster=${1:?usage: retrain_cost_model.sh CLUSTER.json MODEL_OUT.json [DATASET] [MODELS...]}
out=${2:?usage: retrain_cost_model.sh CLUSTER.json MODEL_OUT.json [DATASET] [MODELS...]}
dataset=${3:-$HOME/.cache/mnova/profile.jsonl}
shift $(( $# >= 3 ? 3 : 2 ))
models=${*:-squeezenet1_1 mobilenet_v2 resnet18}
# SWEEP=N (default 40) also profiles N random CNN blocks, shapes the zoo lacks; SWEEP=0 does not.
# ROUNDS=N (default 1) times each slice once more per run until the dataset holds N timings of it:
# rerun hours apart, the model learns each slice's median over the host's slow and fast hours;
# TIEBREAK=1 then also times once more each slice whose rounds differ by more than 10 %
before=$(cat "$dataset" 2>/dev/null | wc -l)
mnova profile --cluster "$cluster" --dataset "$dataset" --models $models --sweep "${SWEEP:-40}" --rounds "${ROUNDS:-1}" \
    ${TIEBREAK:+--tiebreak}
# The model being replaced, scored on the rows this run timed: has the board drifted, do new shapes miss?
if [[ -f "$out" ]] && (( $(wc -l < "$dataset") > before )); then
    fresh=$(mktemp --suffix .jsonl)
    trap 'rm -f "$fresh"' EXIT
    tail -n +$(( before + 1 )) "$dataset" > "$fresh"
    mnova score-cost-model "$out" "$fresh" || echo "(the previous model could not be scored; training anew)"
fi
mnova train-cost-model "$dataset" -o "$out"
