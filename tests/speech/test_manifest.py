"""The units manifest format shared by extraction and dataset building."""
import numpy as np
import pytest

from megatron_spirit.speech.manifest import StreamUnits, UnitsRecord, frame_span
from megatron_spirit.tokenizer.vocab import HUBERT, PITCH, STYLE


def _record():
    return UnitsRecord(
        "utt", 2.0,
        {"hubert": StreamUnits.from_frames([1, 1, 2, 3, 3, 3], 25.0, HUBERT),
         "pitch": StreamUnits.from_frames([4, 4, 5], 12.5, PITCH),
         "style": StreamUnits.from_frames([7, 7], 1.0, STYLE)},
        {"speaker": "s1"},
    )


def test_round_trip_and_frame_level():
    r = UnitsRecord.from_json(_record().to_json())
    assert r.id == "utt" and r.extra == {"speaker": "s1"}
    hu = r.streams["hubert"]
    assert hu.units.tolist() == [1, 2, 3] and hu.starts.tolist() == [0, 2, 3]
    assert hu.frame_level().tolist() == [1, 1, 2, 3, 3, 3]
    assert r.streams["style"].units.tolist() == [7, 7]  # style is not deduplicated
    assert np.allclose(hu.start_times(), [0.0, 0.08, 0.12])
    assert r.merged("base").string() == "[Hu1][Hu2][Hu3]"
    assert r.merged("expressive").string() == "[St7][Pi4][Hu1][Hu2][Hu3][Pi5][St7]"


def test_frame_convention():
    assert frame_span(0, 25.0) == (0.0, 0.04)
    assert np.allclose(frame_span(10, 25.0), (0.4, 0.44))


@pytest.mark.parametrize(
    "units, msg",
    [
        ({"pitch": {"rate": 12.5, "units": [1]}}, "no 'units' with a 'hubert' stream"),
        ({"hubert": {"rate": 25, "units": [1, 501], "starts": [0, 1], "frames": 2}}, "hubert unit out of range"),
        ({"hubert": {"rate": 25, "units": [1, 2], "starts": [1, 0], "frames": 2}}, "start frames must increase"),
        ({"hubert": {"units": [1]}}, "malformed stream record"),
        ({"hubert": {"rate": 25, "units": [1]}, "energy": {"rate": 1, "units": []}}, "unknown unit stream"),
    ],
)
def test_bad_records_name_the_record(units, msg):
    with pytest.raises(ValueError, match=msg) as e:
        UnitsRecord.from_json({"id": "bad7", "units": units}, where="m.jsonl:3")
    assert "m.jsonl:3 record 'bad7'" in str(e.value)


def test_expressive_needs_pitch_and_style():
    r = UnitsRecord.from_json({"id": "u", "units": {"hubert": {"rate": 25, "units": [1]}}})
    with pytest.raises(ValueError, match="needs pitch and style"):
        r.merged("expressive")
