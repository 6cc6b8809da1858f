"""Exceptions that the CLI turns into one clear message and a non-zero exit."""


class TfpVaeError(Exception):
    """Base class for user-facing errors of tfp-vae."""


class ConfigError(TfpVaeError, ValueError):
    """A spec value is unknown, of the wrong type or out of its allowed range."""


class DataError(TfpVaeError):
    """A data set is missing, corrupt or cannot be read."""


class StoreError(TfpVaeError):
    """Records cannot be written (e.g. the disk is full); those already written are intact."""


def unknown_name(what: str, name: object, known: list[str] | tuple[str, ...]) -> str:
    """ "unknown decoder 'studentt' (did you mean 'student_t'?); known decoders: ...": the message for a
    name that is not in a registry, with the closest known names."""
    import difflib

    close = difflib.get_close_matches(str(name), list(known), n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; known {what}s: {', '.join(known)}"
