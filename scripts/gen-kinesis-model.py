#!/usr/bin/env python3
"""Writes crates/kinesis/model/kinesis-2013-12-02.json: the constraint-bearing parts of the AWS
Kinesis service model (operations and shapes, documentation removed) taken from botocore.

Run after `pip install botocore` when the service model changes; the output is committed."""
import json
import os

import botocore
import botocore.loaders

model = botocore.loaders.Loader().load_service_model("kinesis", "service-2")
KEEP_SHAPE = {"type", "required", "members", "member", "key", "value", "min", "max", "pattern",
              "enum", "shape", "error", "exception", "flattened", "eventstream", "event"}


shapes = {}
for name, shape in model["shapes"].items():
    out = {k: v for k, v in shape.items() if k in KEEP_SHAPE}
    if "members" in out:
        out["members"] = {m: {k: v for k, v in spec.items() if k == "shape"} for m, spec in out["members"].items()}
    shapes[name] = out
ops = {}
for name, op in model["operations"].items():
    ops[name] = {k: op[k]["shape"] for k in ("input", "output") if k in op}
    ops[name]["errors"] = [e["shape"] for e in op.get("errors", [])]
doc = {"botocore": botocore.__version__, "metadata": {k: model["metadata"][k] for k in ("apiVersion", "targetPrefix", "jsonVersion")},
       "operations": ops, "shapes": shapes}
here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "crates", "kinesis", "model", "kinesis-2013-12-02.json")
with open(path, "w") as f:
    json.dump(doc, f, indent=1, sort_keys=False)
    f.write("\n")
print("wrote", os.path.normpath(path), len(ops), "operations", len(shapes), "shapes")
