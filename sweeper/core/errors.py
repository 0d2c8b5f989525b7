"""One exception type for every user-facing input error (CLI prints it as one line, exit 2)."""


class UserError(ValueError):
    """Bad input from the user: unknown space/key, wrong type, out-of-range value, bad data."""
