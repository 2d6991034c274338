"""Running an exported ONNX graph (`inference.onnx_export` writes it) behind the scoring interface of the PyTorch
model, so `models.scores.score_table` runs either the same way.

Inputs: input_ids, attention_mask (B×C×T int64), chunk_mask (B×C bool), numeric (B×Dn float32), categorical
(B×Dc int64). Outputs: probs (B×K) and the Shapley split of each decision, text_contribution, tab_contribution,
baseline_score (B each; see `models.contributions`), computed inside the graph.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.batch import Batch
from ..models.fusion import FusionOutput

INPUTS = ["input_ids", "attention_mask", "chunk_mask", "numeric", "categorical"]
OUTPUTS = ["probs", "text_contribution", "tab_contribution", "baseline_score"]


def onnx_file(bundle_dir: Path, quantize: str | None = None) -> Path:
    """Where a neural bundle keeps its graph: model.onnx, or model.int8.onnx for `quantize='int8'`."""
    return Path(bundle_dir) / ("model.int8.onnx" if quantize == "int8" else "model.onnx")


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
