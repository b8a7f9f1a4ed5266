"""Runs tests/fault_injection.py: every fault survived and every generated bad input refused, no data lost."""
from fault_injection import format_rows, run_all


def test_every_fault_is_survived_without_data_loss(capsys):
    rows = run_all()
    with capsys.disabled():
        print("\n" + format_rows(rows))
    failed = [r for r in rows if r[1] != r[2] or r[3] or r[1] == 0]
    assert not failed, format_rows(failed)
