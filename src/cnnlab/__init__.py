"""cnnlab: the NNDL chapter-5 convolutional-network lab as fast, tested PyTorch software.

Layers of the package follow the lab:
operators (`ops`) -> layers (`nn`) -> models (`models`) -> data (`data`) -> training (`train`)
-> accounting and report (`analysis`, `report`) -> command line (`cli`).
"""

__version__ = "0.1.0"
