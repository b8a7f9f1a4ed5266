"""Runs tests/fault_injection.py: every fault survived, no data lost."""
from fault_injection import format_rows, run_all


def test_every_fault_is_survived_without_data_loss(capsys):
    rows = run_all()
    with capsys.disabled():
        print("\n" + format_rows(rows))
    failed = [r for r in rows if not r[1] or r[2]]
    assert not failed, format_rows(failed)
