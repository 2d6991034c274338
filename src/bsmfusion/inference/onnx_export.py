"""`bsmfusion export --format onnx [--quantize int8]`: the WHOLE model (encoder, tabular encoder, fusion, head)
as one ONNX graph with dynamic batch, chunk and token axes, stored inside the bundle (an ensemble: one graph per
neural member, in its member folder). `scoring.onnx_runtime` runs them.

Inputs: input_ids, attention_mask (B×C×T int64), chunk_mask (B×C bool), numeric (B×Dn float32),
categorical (B×Dc int64). Outputs: probs (B×K) and the Shapley split of each decision, text_contribution,
tab_contribution, baseline_score (B each; see `models.contributions`), computed inside the graph. The graph uses the plain `(B·C)×T` encode path
(equal to the packed path within 1e-5); bucketed batches keep its padding small.

Exporting changes a bundle, so it is done as training writes one: in a copy of the folder (a hidden sibling)
whose manifests — each neural member's, then the top one, which lists every member file — are rewritten and, with
a sign key, re-signed before the copy replaces the bundle. A crash leaves the bundle as it was, and the bundle
is never closed-manifest-invalid in between. A signed bundle is exported only with a sign key, and only when its
signature holds (`manifest.check_before_signing`): export never launders a change.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..bundle import load_bundle, normalize_modes, private_key, public_key, swap_into_place
from ..manifest import SIGNATURE, check_before_signing, check_manifest, write_manifest
from ..data.batch import Batch
from ..scoring.onnx_runtime import INPUTS, OUTPUTS, onnx_file


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


def export_onnx(bundle_dir: str | Path, quantize: str | None = None, opset: int = 17, *, sign_key=None,
                verify_key=None) -> list[Path]:
    """Write model.onnx (and model.int8.onnx with `quantize='int8'`) into the bundle — into every neural member's
    folder for an ensemble, whose classical members keep computing in NumPy — and list them in the manifest(s),
    atomically (see the module doc); returns the files written. A bundle with no neural model has no graph to
    export (`BundleError`).

    `sign_key` (an Ed25519 private key, its PEM file or PEM text; None: `BSMFUSION_SIGN_KEY` when set) re-signs
    every manifest rewritten; a signed bundle needs one, and its signature must hold under `verify_key` when given
    (None: `BSMFUSION_VERIFY_KEY` when set), else under the sign key's own public half
    (`manifest.check_before_signing`)."""
    from ..errors import BundleError

    bundle_dir = Path(bundle_dir)
    sign_key, verify_key = private_key(sign_key, env=True), public_key(verify_key, env=True)
    files = check_manifest(bundle_dir)  # the closed manifest, with messages naming the bundle itself
    if sign_key is not None:
        check_before_signing(bundle_dir, files, sign_key, verify_key)
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle_dir.name}.", dir=bundle_dir.parent))
    try:
        shutil.copytree(bundle_dir, staging, dirs_exist_ok=True)
        copy = load_bundle(staging)  # what is exported and signed is what was checked
        members = [] if copy.kind == "neural" else getattr(copy.model, "neural_members", lambda: [])()
        if copy.kind != "neural" and not members:
            raise BundleError(f"bundle '{bundle_dir}' is a {copy.kind} model with no neural member: there is no "
                              "torch graph to export; score it with 'bsmfusion predict' (its members compute in NumPy)")
        folders = [staging, *(Path(m.bundle.path) for m in members)]
        signed = [folder for folder in folders if (folder / SIGNATURE).exists()]
        if signed and sign_key is None:
            raise BundleError(f"bundle '{bundle_dir / signed[0].relative_to(staging)}' is signed; export rewrites its "
                              "manifest, so pass --sign-key (or set BSMFUSION_SIGN_KEY) to re-sign it")
        written = []
        if copy.kind == "neural":
            written = _export_neural(copy, quantize, opset)
        for member in members:  # each member's own manifest, then the top one, which lists every member file
            written += _export_neural(member.bundle, quantize, opset)
            write_manifest(member.bundle.path, sign_key)
        write_manifest(staging, sign_key)
        normalize_modes(staging)
        written = [bundle_dir / path.relative_to(staging) for path in written]
        swap_into_place(staging, bundle_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


def _export_neural(bundle, quantize: str | None, opset: int) -> list[Path]:
    """The graph files of one torch fusion's bundle, written into its folder."""
    bundle_dir = Path(bundle.path)
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
