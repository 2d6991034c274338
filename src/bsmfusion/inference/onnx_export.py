"""`bsmfusion export --format onnx [--quantize int8]`: the WHOLE model (encoder, tabular encoder, fusion, head)
as one ONNX graph with dynamic batch, chunk and token axes, stored inside the bundle.

Inputs: input_ids, attention_mask (B×C×T int64), chunk_mask (B×C bool), numeric (B×Dn float32),
categorical (B×Dc int64). Outputs: probs (B×K) and the Shapley split of each decision, text_contribution,
tab_contribution, baseline_score (B each; see `models.contributions`), computed inside the graph. The graph uses the plain `(B·C)×T` encode path
(equal to the packed path within 1e-5); bucketed batches keep its padding small.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..bundle import MANIFEST, load_bundle, sha256_file
from ..data.batch import Batch
from ..models.fusion import FusionOutput

INPUTS = ["input_ids", "attention_mask", "chunk_mask", "numeric", "categorical"]
OUTPUTS = ["probs", "text_contribution", "tab_contribution", "baseline_score"]


class ExportWrapper(nn.Module):
    """Tensor-in, tensor-out view of a `MultimodalClassifier` for tracing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, chunk_mask, numeric, categorical):
        batch = Batch(numeric=numeric, categorical=categorical, input_ids=input_ids, attention_mask=attention_mask,
                      chunk_mask=chunk_mask)
        output, parts = self.model.explain(batch)
        return (torch.softmax(output.logits.float(), dim=-1), parts.text.float(), parts.tab.float(),
                parts.baseline_score.float())


def onnx_file(bundle_dir: Path, quantize: str | None = None) -> Path:
    return Path(bundle_dir) / ("model.int8.onnx" if quantize == "int8" else "model.onnx")


def example_inputs(bundle, batch: int = 2, chunks: int = 2, tokens: int = 16) -> tuple[torch.Tensor, ...]:
    prep = bundle.preprocessor
    ids = torch.full((batch, chunks, tokens), 1000, dtype=torch.long)
    mask = torch.ones((batch, chunks, tokens), dtype=torch.long)
    mask[1, 1, tokens // 2:] = 0
    chunk_mask = torch.ones((batch, chunks), dtype=torch.bool)
    chunk_mask[0, 1] = False
    numeric = torch.zeros((batch, prep.tabular.numeric_dim), dtype=torch.float32)
    categorical = torch.ones((batch, len(prep.tabular.categorical)), dtype=torch.long)
    return ids, mask, chunk_mask, numeric, categorical


def export_onnx(bundle_dir: str | Path, quantize: str | None = None, opset: int = 17) -> list[Path]:
    """Write model.onnx (and model.int8.onnx with `quantize='int8'`) into the bundle and add them to its manifest;
    returns the files written."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    if bundle.kind != "neural":
        from ..errors import BundleError

        raise BundleError(f"bundle '{bundle_dir}' is a {bundle.kind} model: ONNX export is not supported for this kind "
                          "(it is not a torch graph); score it with 'bsmfusion predict' (engine torch)")
    model = bundle.model.float().eval()
    if model.text_subnetwork is not None:
        model.text_subnetwork.encode_mode = "plain"
        backbone = model.text_subnetwork.backbone
        if hasattr(backbone, "set_attn_implementation"):
            backbone.set_attn_implementation("eager")
    wrapper = ExportWrapper(model).eval()
    target = onnx_file(bundle_dir)
    partial = target.with_name(target.name + ".partial")
    dynamic = {
        "input_ids": {0: "batch", 1: "chunks", 2: "tokens"},
        "attention_mask": {0: "batch", 1: "chunks", 2: "tokens"},
        "chunk_mask": {0: "batch", 1: "chunks"},
        "numeric": {0: "batch"},
        "categorical": {0: "batch"},
        **{name: {0: "batch"} for name in OUTPUTS},
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shape checks inside nn.MultiheadAttention and BERT
        torch.onnx.export(wrapper, example_inputs(bundle), str(partial), input_names=INPUTS, output_names=OUTPUTS,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True)
    partial.replace(target)
    written = [target]
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8 = onnx_file(bundle_dir, "int8")
        with _quiet_onnxruntime():  # it logs advice about pre-processing image models through the root logger
            quantize_dynamic(str(target), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        written.append(int8)
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    for path in written:
        manifest[path.name] = sha256_file(path)
    tmp = bundle_dir / (MANIFEST + ".partial")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(bundle_dir / MANIFEST)
    return written


@contextlib.contextmanager
def _quiet_onnxruntime():
    """Drop log records emitted from onnxruntime's Python files (warnings and info) while the block runs."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname

    root, own = logging.getLogger(), logging.getLogger("onnxruntime")
    level = own.level
    root.addFilter(keep)
    own.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeFilter(keep)
        own.setLevel(level)


class OnnxModel:
    """Runs an exported graph with onnxruntime behind the scoring interface of the PyTorch model
    (`MultimodalClassifier.batch_scores`, `eval`), so `models.scores.score_table` runs either the same way."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def eval(self) -> "OnnxModel":
        """Nothing to switch: the graph is the model in eval mode (dropout off)."""
        return self

    def __call__(self, batch: Batch) -> FusionOutput:
        """As the PyTorch model's forward: a `FusionOutput` whose logits are the graph's log-probabilities (softmax
        gives the same probabilities back); no `details` (the graph does not output them)."""
        probs = torch.from_numpy(self.batch_scores(batch)[0])
        return FusionOutput(logits=torch.log(probs.clamp_min(1e-30)))

    def batch_scores(self, batch: Batch, target: torch.Tensor | None = None) -> tuple:
        """(probs `B×K`, text `B`, tab `B`, baseline `B`) as numpy arrays. The graph splits the predicted class's
        logit (multiclass); a `target` class is refused."""
        if target is not None:
            raise ValueError("the ONNX graph splits the predicted class only; score with the PyTorch model (engine "
                             "torch) to split another class's logit")
        feed = {name: getattr(batch, name).cpu().numpy() for name in self.input_names}
        return tuple(self.session.run(OUTPUTS, feed))
