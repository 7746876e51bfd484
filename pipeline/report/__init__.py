"""Report: the Markdown summary for the CI page and pull request; e-mail and webhooks in ``report.notify``."""

from pipeline.report.ci_summary import publish_github, render_markdown, write_summary

__all__ = ["publish_github", "render_markdown", "write_summary"]
