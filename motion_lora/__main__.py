"""`python -m motion_lora ...`: see motion_lora/cli.py."""

import sys

from .cli import main

sys.exit(main())
