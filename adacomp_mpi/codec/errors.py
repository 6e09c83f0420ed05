"""The one exception type the decoder raises for any bad payload."""


class PayloadError(ValueError):
    """A payload is truncated, corrupted, of another version, or for another model."""
