"""`python -m cnnlab ...`: the `cnnlab` command, so that `torchrun -m cnnlab train ...` works."""

import sys

from cnnlab.cli import main

sys.exit(main())
