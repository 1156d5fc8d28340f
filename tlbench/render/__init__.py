"""Rendering: every table (markdown, CSV, LaTeX, plain text) in :mod:`.tables` and every
picture (matplotlib, PNG) in :mod:`.pictures`. Measuring code returns dataclasses; only this
package turns them into text and images."""

__all__ = ["pictures", "tables"]
