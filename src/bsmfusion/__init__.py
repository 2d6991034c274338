"""bsmfusion: classify buyer-seller message threads together with their order and account facts."""
__version__ = "0.1.0"


def load(bundle_dir, **kwargs):
    """Load a trained bundle folder → `Predictor` (see `bsmfusion.inference.predictor`)."""
    from .inference.predictor import load as _load

    return _load(bundle_dir, **kwargs)


__all__ = ["__version__", "load"]
