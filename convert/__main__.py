"""`python -m convert SRC OUT [--overwrite] [--preset NAME] [--revision REV]`: nanocodec.convert's command."""
import sys

from nanocodec.convert.__main__ import main

sys.exit(main())
