"""The report's failure cells: readable text, the whole message kept in the title (pure)."""

import pytest

from edgedeploy.host.htmlreport import _short

STORE = "/tmp/pytest-of-root/pytest-176/test_report0/pi-tflrt/store/models/digits/ad7facb2586f"


@pytest.mark.parametrize("msg, text", [
    (f"{STORE}/broken.tflite: the tflite_runtime runtime cannot load this model: bad identifier",
     "broken.tflite: the tflite_runtime runtime cannot load this model: bad identifier"),
    ("cannot read '/data/set/test.npz' (no such file)", "cannot read 'test.npz' (no such file)"),
    ("see https://ai.google.dev/edge/litert and /opt/x/y", "see https://ai.google.dev/edge/litert and y"),
    ("no path here", "no path here"),
    ("x" * 200, "x" * 139 + "…"),
])
def test_failure_text_cuts_paths_then_length(msg, text):
    assert _short(msg) == text


def test_a_long_store_path_twice_still_leaves_the_reason_visible():
    msg = f"{STORE}/broken.tflite: {STORE}/broken.tflite: the tflite_runtime runtime cannot load"
    assert "cannot load" in _short(msg)
