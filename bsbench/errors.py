class UserError(Exception):
    """A problem the user can fix from the command line; its message is one sentence naming the
    setting and what would work, and it is printed without a traceback."""
