import json
import subprocess
import sys


def test_bench_writes_one_record_per_setting(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "mtkd", "bench", "--steps", "3", "--repeats", "2", "--warmup", "1",
                             "--samples", "200", "--unlabeled", "50", "--teachers", "1,2", "--teacher-channels", "4",
                             "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| cached | 2 |" in result.stdout and "cache: 2 teacher(s) built" in result.stdout
    records = json.loads(out.read_text())
    assert [(r["mode"], r["teachers"]) for r in records] == [
        ("student_only", 0), ("hand_loop", 1), ("hand_loop", 2), ("live", 1), ("live", 2), ("cached", 1), ("cached", 2)]
    for r in records:
        assert r["step_seconds"] > 0 and r["step_seconds_min"] <= r["step_seconds"] <= r["step_seconds_max"]
        assert abs(r["ratio_to_student_only"] - r["step_seconds"] / records[0]["step_seconds"]) < 1e-3
    assert records[0]["ratio_to_student_only"] == 1.0
    assert "ratio_to_hand_loop" in records[3] and records[5]["cache_mib"] > 0


def test_bench_rejects_bad_arguments():
    result = subprocess.run([sys.executable, "-m", "mtkd", "bench", "--teachers", "0"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "--teachers" in result.stderr
