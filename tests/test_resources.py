"""No import-time side effects, and model/tokenizer loading that never reaches the network."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HF_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM")


def _run(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in HF_VARIABLES}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


IMPORT_ONLY = """
import json, logging, os
# third-party libraries first: what their own imports change is theirs, not bsmfusion's
import fastapi, pandas, pytorch_lightning, sklearn.metrics, torch, transformers, yaml
from transformers.utils import logging as hf_logging

def snapshot():
    loggers = {name: logging.getLogger(name).level for name in ("", "transformers", "pytorch_lightning", "bsmfusion")}
    return {"env": dict(os.environ), "loggers": loggers, "hf_progress": hf_logging.is_progress_bar_enabled(),
            "hf_verbosity": hf_logging.get_verbosity()}

before = snapshot()
import bsmfusion, bsmfusion.config, bsmfusion.cli, bsmfusion.data.text, bsmfusion.models.backbone
import bsmfusion.training.fit, bsmfusion.inference.predictor, bsmfusion.serving.app
after = snapshot()
changed_env = sorted(k for k in set(before["env"]) | set(after["env"]) if before["env"].get(k) != after["env"].get(k))
print(json.dumps({"changed_env": changed_env, "before": {k: v for k, v in before.items() if k != "env"},
                  "after": {k: v for k, v in after.items() if k != "env"}}))
"""


@pytest.mark.slow
def test_importing_bsmfusion_changes_no_environment_variable_or_logger():
    out = _run(IMPORT_ONLY)
    assert out["changed_env"] == []
    assert out["after"] == out["before"]


NO_NETWORK_LOAD = """
import json, os, socket

def refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from bsmfusion.config import TextConfig
from bsmfusion.data.text import load_tokenizer, tokenizer_source
from bsmfusion.models.backbone import build_backbone

try:
    socket.create_connection(("huggingface.co", 443))
    blocked = False
except RuntimeError:
    blocked = True
cfg = TextConfig()
tokenizer = load_tokenizer(tokenizer_source(cfg))
weights = build_backbone(cfg)
shape_only = build_backbone(cfg, load_weights=False)
print(json.dumps({"blocked": blocked, "offline_env": [k for k in %r if k in os.environ],
                  "ids": tokenizer("hello world", add_special_tokens=False)["input_ids"],
                  "hidden": [weights.config.hidden_size, shape_only.config.hidden_size]}))
""" % (HF_VARIABLES,)


@pytest.mark.slow
def test_model_and_tokenizer_load_without_network_or_offline_variables():
    out = _run(NO_NETWORK_LOAD)
    assert out["blocked"] and out["offline_env"] == []
    assert out["ids"] == [7592, 2088]  # 'hello', 'world' in the bundled MiniLM vocabulary
    assert out["hidden"] == [384, 384]
