"""The suite that reproduces the committed traces: every preset expands, runs nothing in a dry run, and every
file in traces/ is made by some preset."""
import os

import pytest

from profiler.suite import PRESETS, claimed, expand, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_committed_trace_is_made_by_a_preset():
    traces = os.path.join(ROOT, "traces")
    files = [os.path.relpath(os.path.join(root, f), traces) for root, _, names in os.walk(traces) for f in names]
    unclaimed = [f for f in files if f != "README.md" and not claimed(f)]
    assert files and not unclaimed, f"traces no preset makes: {unclaimed}"
    assert not claimed("h999_made_up.jsonl")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_expand_into_commands_writing_under_out(preset, capsys):
    commands = expand(preset, "OUTDIR", "h200")
    assert commands
    for argv in commands.values():
        assert "{" not in " ".join(argv)
        if "--out" in argv:
            assert argv[argv.index("--out") + 1].startswith("OUTDIR")
    assert main(["--preset", preset, "--dry-run", "--out", "OUTDIR", "--gpu-name", "h200"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [" ".join(argv) for argv in commands.values()]


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="--preset must be one of"):
        expand("everything", "x", "h200")
    with pytest.raises(SystemExit):
        main(["--preset", "everything"])
