"""examples/streaming_server.py on the fixture model: streams join and leave slots of one decoder."""
import runpy
import sys

import pytest

from conftest import ROOT
from parity import fixtures

pytestmark = pytest.mark.usefixtures("one_thread")


def test_streaming_server_example(base_folder, monkeypatch, capsys):
    audio = fixtures.FIXTURES / "audio"
    inputs = [audio / "speech_0p5s.wav", audio / "len_1765.wav", audio / "speech_0p5s.wav"]
    # three clients on two slots: the third waits for a slot to be freed and reset
    monkeypatch.setattr(sys, "argv", ["streaming_server.py", str(base_folder), *map(str, inputs), "--slots", "2", "--no-realtime"])
    runpy.run_path(str(ROOT / "examples" / "streaming_server.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "3 streams on 2 slots" in out
    assert out.count("(within 1e-5)") == 3 and "NOT within" not in out, out
