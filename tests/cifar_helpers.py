"""The synthetic CIFAR-10 writer, for the tests: it lives in the package (`cnnlab.data.synthetic`)
so that benchmarks and a GPU machine without the real set can use it too."""

from cnnlab.data.synthetic import (ARCHIVE, BATCH_SIZE, CLASSES, FOLDER, TRAIN, Global,  # noqa: F401
                                   Py2Pickler, Py2Str, Reduce, SyntheticCifar, batch_dict,
                                   make_images, meta_dict, py2_array, py2_dumps, write_archive,
                                   write_cifar10)
