"""Names of the data sources, importable without torch (the CLI builds its --help from them)."""

SOURCE_HELP = "bundled, idx:DIR (MNIST IDX files) or nndl-json:FILE (the lab's mnist.json.gz)"
