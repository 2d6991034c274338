"""Workflows over every model kind: `train` (the one training dispatcher) and `compare` (a leaderboard). They sit
above the ensemble layer and below inference, serving and the public API (docs/architecture.md)."""
