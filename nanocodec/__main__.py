"""`python -m nanocodec ...` is the `nanocodec` command."""
import sys

from .cli import main

sys.exit(main())
