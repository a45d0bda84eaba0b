"""gfa_keras: harden Keras 3 classifiers with layer-wise Gradient-Feature Alignment."""
from gfa_keras.alignment import alignment_penalty, gradient_feature_alignment
from gfa_keras.model import GFAModel, harden

__version__ = "0.1.0"

__all__ = ["GFAModel", "harden", "gradient_feature_alignment", "alignment_penalty", "__version__"]
