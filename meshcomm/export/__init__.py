"""After-action export (issue 11): journals merged into one verified incident record."""
