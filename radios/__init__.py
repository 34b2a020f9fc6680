"""radios."""
