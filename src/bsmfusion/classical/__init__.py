"""Classical members, selectable as `model.fusion`: `tfidf_lr` (TF-IDF + numerics + one-hot → logistic regression)
and `gbdt` (LightGBM on numerics + one-hot + the TF-IDF, as an SVD or its word columns), and any registered with
`kinds.register_kind`.
They are not torch fusions: the kind registry (`kinds`) names `classical.train.train_member` as their trainer and
`classical.storage.load_member` as their loader; bundles hold JSON, safetensors and LightGBM's text format (never
pickle), and `scoring.scorers.build_scorer` scores them through the same `Predictor` code as the neural models."""
