"""``python -m liverec.cli``: the same as the ``liverec`` command."""

import sys

from liverec.cli import main

sys.exit(main())
