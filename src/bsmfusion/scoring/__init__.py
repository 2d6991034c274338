"""The scoring runtime: what turns rows into `Scores` for any bundle kind, with every fast path (ONNX and int8
graphs, TorchInductor, the chunk-vector cache), configured by one `ScoringOptions` value. Below training (which
scores validation rows) and the ensemble; above the bundle format and calibration (docs/architecture.md)."""
