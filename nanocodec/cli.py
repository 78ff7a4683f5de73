"""`python -m nanocodec.cli`, the documented name of the command line (nanocodec/apps/cli.py)."""
import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
