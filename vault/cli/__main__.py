"""``python -m vault.cli``: the same as the ``cvault`` script."""

import sys

from vault.cli import main

sys.exit(main())
