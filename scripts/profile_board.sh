#!/usr/bin/env bash
# Profile a real board that has joined a TVM RPC tracker, and add its rows to a dataset.
#   on the board:  MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=65536 python -m tvm.exec.rpc_server --tracker HOST:9190 --key rpi4b-1
#   here:          bash scripts/profile_board.sh CLUSTER.json [DATASET] [MODELS...]
# CLUSTER.json lists the board (board JSON, RPC key, budget, link) and the tracker's host and port;
# the cluster must already be up (its tracker running: mnova cluster up --cluster CLUSTER.json).
set -euo pipefail
cluster=${1:?usage: profile_board.sh CLUSTER.json [DATASET] [MODELS...]}
dataset=${2:-$HOME/.cache/mnova/profile.jsonl}
shift $(( $# >= 2 ? 2 : 1 ))
models=${*:-squeezenet1_1 mobilenet_v2 resnet18}
exec mnova profile --cluster "$cluster" --dataset "$dataset" --models $models
