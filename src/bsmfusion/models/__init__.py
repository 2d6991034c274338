"""Model side: plain nn.Modules (encoders, fusions, the composed classifier). No training loop here."""
from .classifier import MultimodalClassifier, build_model
from .fusion import FUSIONS, FusionOutput, register_fusion
from .tabular_encoder import PLRTabularEncoder, TabularEncoder, build_tab_encoder
from .text_encoder import TextEncoder

__all__ = ["MultimodalClassifier", "build_model", "FUSIONS", "FusionOutput", "register_fusion",
           "PLRTabularEncoder", "TabularEncoder", "build_tab_encoder", "TextEncoder"]
