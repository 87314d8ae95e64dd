"""``python -m fechatter`` is the ``fechatter`` command."""

import sys

from fechatter.cli import main

sys.exit(main())
