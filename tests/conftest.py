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
    from nanocodec.convert.converter import convert

    out = tmp_path_factory.mktemp("converted") / "nano0p6"
    convert(str(BASE_NEMO), str(out))
    return out


@pytest.fixture(scope="session", autouse=True)
def private_converted_cache(tmp_path_factory):
    """from_pretrained of a .nemo caches its conversion: never in the user's real cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NANOCODEC_CACHE", str(tmp_path_factory.mktemp("nanocodec-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def one_thread():
    """For modules of many tiny convs: on a busy 2-core machine, 2 intra-op threads made them ~20x
    slower (OpenMP spin-waits); results are the same under the contracts §5 rules."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
