#!/usr/bin/env bash
# Manual cross-check of cnnlab's .pdparams import/export against real PaddlePaddle (not part of
# `make test`: Paddle is a large, separate install). Usage, from the repository root:
#   python3 -m venv /tmp/pd && /tmp/pd/bin/pip install paddlepaddle
#   bash scripts/paddle_check/run.sh /tmp/pd/bin/python
# It exports our lenet / resnet18 / resnet18-plain (lab layout) and resnet18 without stem bias
# (paddle.vision layout), loads each into the lab's Paddle models (their code copied from the
# lab text) with set_state_dict, and compares outputs; then the other way round with paddle.save.
set -euo pipefail
PD=${1:?path to a python with paddlepaddle installed}
OURS=$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/python
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d); cd "$WORK"
"$OURS" "$HERE/ours.py" export
for k in lenet resnet18 resnet18-plain vision; do
  "$PD" "$HERE/paddle_side.py" load "$k" "ours_$k.pdparams" "pd_load_$k.npy"
  "$PD" "$HERE/paddle_side.py" save "$k" "pd_$k.pdparams" "pd_save_$k.npy"
done
"$OURS" "$HERE/ours.py" import
"$OURS" - <<'PY'
import numpy as np
for k in ["lenet", "resnet18", "resnet18-plain", "vision"]:
    a, b = np.load(f"ours_{k}_out.npy"), np.load(f"pd_load_{k}.npy")
    c, d = np.load(f"ours_from_pd_{k}_out.npy"), np.load(f"pd_save_{k}.npy")
    print(f"{k:15s} ours->paddle max|diff| {abs(a - b).max():.1e} (|out| {abs(a).max():.2f})   "
          f"paddle->ours max|diff| {abs(c - d).max():.1e} (|out| {abs(d).max():.2f})")
PY
