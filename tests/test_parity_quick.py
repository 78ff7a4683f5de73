"""`python -m parity --quick` (what plain `make` runs) never writes the tracked reports: it refuses
reports/ as its folder and other models before any work (the run itself is `make`'s, ~1 CPU-minute)."""
import pytest

from parity import __main__ as parity_main
from parity import fixtures


def test_quick_mode_refuses_tracked_reports_and_other_models(capsys):
    for argv, match in ((["--quick", "--report", str(fixtures.ROOT / "reports")], "does not write the tracked reports"),
                        (["--quick", "--model", "lfsc"], "leave --model out")):
        with pytest.raises(SystemExit) as done:
            parity_main.main(argv)
        assert done.value.code == 2 and match in capsys.readouterr().err
    assert parity_main.QUICK_MODEL in {c.name for c in fixtures.model_cases()}
    assert parity_main.QUICK_REPORT == fixtures.ROOT / "out" / "parity"  # git-ignored (/out/ in .gitignore)
