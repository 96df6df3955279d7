"""The one error type the app and the CLI show to people instead of a traceback."""


class UserFacingError(ValueError):
    """Something the user can fix; the message says what to do."""
