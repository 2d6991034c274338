"""Per-message and per-feature attribution inside the two-player split: `attribution.attribute` (the games),
`shapley` (the estimator), `players` (messages, columns and the rows that remove them), `record` (one row's
explanation as JSON), `page` (its self-contained HTML page)."""
