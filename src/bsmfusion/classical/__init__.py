"""Classical members, selectable as `model.fusion`: `tfidf_lr` (TF-IDF + numerics + one-hot → logistic regression),
`gbdt` (LightGBM on numerics + one-hot + an SVD of the TF-IDF) and `ensemble` (a neural fusion plus both, weights
by greedy selection on validation). They are not torch fusions: `training.fit.train` dispatches here by kind
(`models.kinds`), bundles hold JSON, safetensors and LightGBM's text format (never pickle), and
`inference.scorers.build_scorer` scores them through the same `Predictor` code as the neural models."""
