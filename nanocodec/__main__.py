"""`python -m nanocodec ...` is the `nanocodec` command."""
import sys

from .apps.cli import main

sys.exit(main())
