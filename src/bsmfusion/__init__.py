"""bsmfusion: classify buyer-seller message threads together with their order and account facts."""
from .resources import force_offline as _force_offline

_force_offline()

__version__ = "0.1.0"
__all__ = ["__version__"]
