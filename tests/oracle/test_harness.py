"""The oracle's comparison itself: it must catch every unexplained difference."""

from harness import load_differences, unexplained

from emu.testing.results import GuestRun


def guest_run(transcript: str, exit_code: int) -> GuestRun:
    return GuestRun("g", "emu", [], exit_code, transcript)


ALLOW_MODEL = [
    {
        "guests": ["ident"],
        "ours": r"model: AHCI-EMU.*",
        "qemu": r"model: QEMU.*",
        "reason": "model string is ours by design",
    }
]


def test_identical_runs_have_no_differences():
    assert unexplained("g", guest_run("a\nb\n", 0), guest_run("a\nb\n", 0), []) == []


def test_differing_line_exit_code_and_length_are_all_reported():
    problems = unexplained("g", guest_run("a\nX\nc\n", 1), guest_run("a\nb\n", 0), [])
    assert problems == [
        "exit code: ours 1, QEMU 0",
        "line count: ours 3, QEMU 2",
        "line 2: ours 'X', QEMU 'b'",
    ]


def test_listed_difference_is_allowed_only_for_its_guest():
    ours, theirs = (
        guest_run("model: AHCI-EMU HARDDISK\n", 0),
        guest_run("model: QEMU HARDDISK\n", 0),
    )
    assert unexplained("ident", ours, theirs, ALLOW_MODEL) == []
    assert unexplained("other", ours, theirs, ALLOW_MODEL) != []


def test_differences_file_entries_all_carry_a_reason():
    for entry in load_differences():
        assert entry["reason"].strip()


def test_exit_codes_that_count_explained_failures_are_accepted():
    ours = guest_run("ok 1 - a\nok 2 - b\n", 0)
    theirs = guest_run("ok 1 - a\nnot ok 2 - b: x\n", 1)
    allow = [{"guests": ["g"], "ours": r"ok 2 - b", "qemu": r"not ok 2 - b: .*", "reason": "r"}]
    assert unexplained("g", ours, theirs, allow) == []
    assert unexplained("g", ours, guest_run(theirs.transcript, 7), allow) == [
        "exit code: ours 0, QEMU 7"
    ]
