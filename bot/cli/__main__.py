"""`python -m bot.cli ...` = `liqbot ...`."""

import sys

from bot.cli import main

sys.exit(main())
