"""cnnlab: the NNDL chapter-5 convolutional-network lab as fast, tested PyTorch software.

Layers of the package follow the lab, and every import points down them (tests/test_layers.py):
leaf modules (`errors`, `atomic`, `runinfo`) -> operators (`ops`) -> layers (`nn`) -> models
(`models`) -> accounting (`analysis`) -> data (`data`) -> training (`train`) -> other frameworks'
weights (`interop`) -> the report (`report`) -> the explorer (`explore`) -> command line (`cli`).
"""

__version__ = "0.1.0"
