"""``python -m moshi_data <command>``: the same as the ``moshi-data`` console script."""
import sys

from moshi_data.cli import main

sys.exit(main())
