import sys
from pathlib import Path

# convert/ and parity/ are repository packages (never installed): import them from the checkout.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
BASE_NEMO = FIXTURES / "models" / "nano0p6_replicate.nemo"


@pytest.fixture(scope="session")
def base_folder(tmp_path_factory):
    """The base fixture .nemo converted once with our converter (a release-layout folder)."""
    from convert.converter import convert

    out = tmp_path_factory.mktemp("converted") / "nano0p6"
    convert(str(BASE_NEMO), str(out))
    return out
