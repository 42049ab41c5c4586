"""`python -m multijepa ...`: the CLI, also as torchrun launches it (`torchrun ... -m multijepa pretrain ...`)."""

import sys

from .cli import main

sys.exit(main())
