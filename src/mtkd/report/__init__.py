from .markdown import write_report
from .summary import build_summary, calibration_and_agreement, format_table, markdown_table, teacher_faults

__all__ = ["build_summary", "calibration_and_agreement", "format_table", "markdown_table", "teacher_faults", "write_report"]
