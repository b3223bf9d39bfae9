"""The fault vocabulary: specs on the command line and in TOML/JSON files."""

import json

import pytest

from emu.faults.plan import FaultPlan
from emu.faults.spec import OPCODE_CLASSES, FaultSpecError, load_faults, parse_fault


def test_media_error_over_a_range():
    fault = parse_fault("media-error:lba=100-107")
    assert (fault.kind, fault.layer, fault.trigger.lba) == ("media-error", "ata", (100, 107))
    assert fault.trigger.matches(0, 0x25, 96, 5)  # 96..100 touches 100
    assert not fault.trigger.matches(0, 0x25, 96, 4)  # 96..99 does not
    assert not fault.trigger.matches(0, 0x25, 108, 1)


def test_every_trigger_key():
    fault = parse_fault("abrt:port=1,lba=5,opcode=0x25+flush,nth=3,p=0.5,times=2")
    t = fault.trigger
    assert (t.port, t.lba, t.nth, t.probability, t.times) == (1, (5, 5), 3, 0.5, 2)
    assert t.opcodes == {0x25} | OPCODE_CLASSES["flush"]
    assert not t.matches(0, 0x25, 5, 1)  # other port


def test_port_side_kinds_and_their_parameters():
    assert parse_fault("latency:opcode=ncq,commands=3").params == {"commands": 3}
    assert parse_fault("link-loss:port=1,down-ms=50").layer == "ahci"
    assert parse_fault("stall:nth=2").trigger.nth == 2


def test_power_cut_sugar_is_an_opcode_class_and_nth():
    cut = parse_fault("power-cut:write=5").trigger
    assert (cut.opcodes, cut.nth) == (OPCODE_CLASSES["write"], 5)
    assert parse_fault("power-cut:command=7").trigger.opcodes is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("meltdown", "unknown kind 'meltdown'"),
        ("media-error", "needs lba=FIRST-LAST"),
        ("media-error:lba=9-3", "ends before it starts"),
        ("media-error:lba=x", "is not a number"),
        ("abrt:nth=0", "counts from 1"),
        ("abrt:p=1.5", "not between 0 and 1"),
        ("abrt:opcode=0x100", "more than 0xff"),
        ("abrt:lba", "is not KEY=VALUE"),
        ("abrt:nth=1,nth=2", "given twice"),
        ("abrt:write=1", "abrt takes no 'write'"),
        ("latency", "commands=N or ms=T"),
        ("latency:commands=1,ms=2", "commands=N or ms=T"),
        ("stall:ms=3", "stall takes no 'ms'"),
        ("link-loss:down=3,down-ms=4", "not both"),
        ("power-cut:write=1,flush=2", "one of write=, flush=, command="),
        ("power-cut:write=1,nth=2", "already says nth"),
    ],
)
def test_bad_specs_say_what_is_wrong_in_one_line(spec, fragment):
    with pytest.raises(FaultSpecError) as exc:
        parse_fault(spec)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    assert exc.value.exit_status == 2


def test_toml_and_json_files_hold_the_same_vocabulary(tmp_path):
    toml = tmp_path / "f.toml"
    toml.write_text('faults = ["media-error:lba=1-2", {kind="abrt", opcode="flush", nth=2}]')
    js = tmp_path / "f.json"
    table = {"kind": "abrt", "opcode": "flush", "nth": 2}
    js.write_text(json.dumps(["media-error:lba=1-2", table]))
    assert load_faults(str(toml)) == load_faults(str(js))
    assert [f.kind for f in load_faults(str(js))] == ["media-error", "abrt"]


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("bad.toml", "faults = [", "not valid TOML"),
        ("bad.json", "{", "not valid JSON"),
        ("list.toml", "faults = 3", "expected a list of faults"),
        ("entry.json", "[3]", "neither a spec nor a table"),
        ("nested.json", '[{"kind": "abrt", "nth": [1]}]', "numbers or strings"),
    ],
)
def test_bad_fault_files(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FaultSpecError, match=fragment):
        load_faults(str(path))


def test_missing_fault_file(tmp_path):
    with pytest.raises(FaultSpecError, match="cannot read"):
        load_faults(str(tmp_path / "none.toml"))


def _fires(plan: FaultPlan, commands: int) -> list[int]:
    return [n for n in range(commands) if plan.check("ata", 0, 0x25, n, 1) is not None]


def test_nth_fires_once_at_the_nth_matching_command():
    plan = FaultPlan([parse_fault("abrt:lba=10-19,nth=3")])
    assert _fires(plan, 40) == [12]


def test_times_caps_a_fault():
    assert _fires(FaultPlan([parse_fault("abrt:times=2")]), 10) == [0, 1]


def test_probability_is_driven_by_the_seed_alone():
    spec = [parse_fault("abrt:p=0.3")]
    first = _fires(FaultPlan(spec, seed=7), 200)
    assert first == _fires(FaultPlan(spec, seed=7), 200)
    assert first != _fires(FaultPlan(spec, seed=8), 200)
    assert 30 < len(first) < 90  # about 60 of 200


def test_a_fault_that_fires_is_reported(capsys):
    plan = FaultPlan([parse_fault("abrt:nth=2")], verbose=True)
    seen = []
    plan.listeners.append(seen.append)
    _fires(plan, 3)
    record = {"event": "fault", "kind": "abrt", "spec": "abrt:nth=2", "port": 0,
              "opcode": 0x25, "lba": 1, "count": 1}  # fmt: skip
    assert seen == plan.fired == [record]
    assert capsys.readouterr().err == (
        "ahci-emu: fault: abrt:nth=2: port 0, opcode 0x25, lba 1, count 1\n"
    )
