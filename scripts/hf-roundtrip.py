#!/usr/bin/env python3
"""Checks that model folders written by moe4j load in transformers and give moe4j's logits.

    python3 scripts/hf-roundtrip.py FOLDERS_DIR OUT_DIR

Each subfolder of FOLDERS_DIR is a Hugging Face model folder saved by moe4j (train --init-from) with an
extra expected.safetensors: input_ids (B, S) int32 and logits (B, S, V) float32 as moe4j computed them on
the saved model. Writes OUT_DIR/roundtrip.json: per folder, the loading report (missing / unexpected keys)
and max |transformers - moe4j| over the logits.
"""
import json, os, sys, traceback

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

folders, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
results = {"transformers": transformers.__version__, "torch": torch.__version__}
for name in sorted(os.listdir(folders)):
    d = os.path.join(folders, name)
    if not os.path.isfile(os.path.join(d, "expected.safetensors")):
        continue
    try:
        model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                           output_loading_info=True)
        model.eval()
        exp = load_file(os.path.join(d, "expected.safetensors"))
        with torch.no_grad():
            logits = model(input_ids=exp["input_ids"].long()).logits.float()
        diff = (logits - exp["logits"].reshape(logits.shape)).abs().max().item()
        results[name] = {"max_abs_diff": diff, "missing": list(info.get("missing_keys", [])),
                         "unexpected": list(info.get("unexpected_keys", [])),
                         "mismatched": [str(m) for m in info.get("mismatched_keys", [])]}
    except Exception:
        results[name] = {"error": traceback.format_exc()}
    print(name, results[name], flush=True)
with open(os.path.join(out_dir, "roundtrip.json"), "w") as f:
    json.dump(results, f, indent=1)
