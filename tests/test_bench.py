import json

from mtkd.cli import main


def test_bench_writes_one_record_per_setting(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--steps", "3", "--repeats", "2", "--warmup", "1", "--samples", "200", "--unlabeled", "50",
                 "--teachers", "1,2", "--teacher-channels", "4", "--json", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "| cached | 2 |" in stdout and "cache: 2 teacher(s) built" in stdout
    records = json.loads(out.read_text())
    assert [(r["mode"], r["teachers"]) for r in records] == [
        ("student_only", 0), ("hand_loop", 1), ("hand_loop", 2), ("live", 1), ("live", 2), ("cached", 1), ("cached", 2)]
    for r in records:
        assert r["step_seconds"] > 0 and r["step_seconds_min"] <= r["step_seconds"] <= r["step_seconds_max"]
        assert abs(r["ratio_to_student_only"] - r["step_seconds"] / records[0]["step_seconds"]) < 1e-3
    assert records[0]["ratio_to_student_only"] == 1.0
    assert "ratio_to_hand_loop" in records[3] and records[5]["cache_mib"] > 0


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--teachers", "0"]) == 2
    assert "--teachers" in capsys.readouterr().err


def test_bench_json_never_replaces_a_file_it_was_not_told_to(tmp_path, capsys):
    """An existing --json file (mtkd cannot tell it wrote it), a folder, or a missing parent folder:
    one line and exit 2 before anything is measured; the file is left as it was."""
    mine = tmp_path / "notes.json"
    mine.write_text("my own notes")
    args = ["bench", "--steps", "1", "--repeats", "1", "--warmup", "0", "--samples", "200", "--unlabeled", "50",
            "--teachers", "1", "--teacher-channels", "4", "--modes", "student_only"]
    assert main([*args, "--json", str(mine)]) == 2
    err = capsys.readouterr()
    assert "--overwrite" in err.err and "| student_only" not in err.out  # refused before measuring
    assert mine.read_text() == "my own notes"
    assert main([*args, "--json", str(tmp_path)]) == 2 and "directory" in capsys.readouterr().err
    assert main([*args, "--json", str(tmp_path / "missing" / "b.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*args, "--json", str(mine), "--overwrite"]) == 0
    assert json.loads(mine.read_text())[0]["mode"] == "student_only"
