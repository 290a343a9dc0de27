"""The project's exceptions; driver errors are translated into these at the database boundary."""


class StreamStatsError(Exception):
    """Something went wrong in stream-stats."""

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())


class SettingsError(StreamStatsError):
    """The configuration is invalid."""


class MigrationError(StreamStatsError):
    """The database schema cannot be brought up to date."""


class DatabaseUnavailable(StreamStatsError):
    """The database is unreachable."""
