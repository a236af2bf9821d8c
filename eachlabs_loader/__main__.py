"""``python -m eachlabs_loader``: the same as the ``eachlabs-loader`` command."""

import sys

from .cli import main

sys.exit(main())
