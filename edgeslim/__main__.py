import sys

from edgeslim.cli import console

sys.exit(console())
