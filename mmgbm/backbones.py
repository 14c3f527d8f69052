"""The EfficientNet backbones mmgbm embeds photos with: each one's embedding size and default input size.

A bottom module: the config validates `features.image` against it and the encoder builds the network from it.
"""

BACKBONE_DIMS = {"b0": 1280, "b3": 1536}
BACKBONE_SIZES = {"b0": 224, "b3": 300}
