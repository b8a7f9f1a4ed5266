"""`mtkd demo --fast` as a user runs it: a real process, the table, the run directory."""
import json
import os
import subprocess
import sys


def test_demo_fast(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "mtkd", "demo", "--fast", "--out", str(out)],
                          capture_output=True, text=True, env=dict(os.environ, MPLBACKEND="Agg"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in ("cnn", "gru", "transformer", "ensemble", "from scratch", "distilled (offline, mean)"):
        assert row in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert len({t["arch"] for t in summary["teachers"]}) >= 3
    assert set(summary["scratch"]) >= {"arch", "params", "accuracy"}
    assert summary["scratch"]["params"] == summary["student"]["params"]
    # the point of the product: the distilled student beats the same student trained alone
    assert summary["student"]["accuracy"] > summary["scratch"]["accuracy"]
    for name in ("config.yaml", "metrics.jsonl", "report.md", "student.pt"):
        assert (out / name).is_file()
