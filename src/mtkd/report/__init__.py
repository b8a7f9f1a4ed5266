from .markdown import write_report
from .summary import build_summary, format_table, markdown_table

__all__ = ["build_summary", "format_table", "markdown_table", "write_report"]
