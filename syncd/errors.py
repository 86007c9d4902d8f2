"""The exception tree. The CLI turns each into one line for the operator and an exit status.

    SyncdError                      exit 2 unless a subclass says otherwise
    ├── ConfigError                 bad config, mapping or secret           (exit 2)
    ├── SourceError                 the export cannot be read at all        (exit 2)
    │   └── NotSettledError         the export is still being written       (exit 3)
    ├── GuardError                  refused by a safety guard               (exit 3)
    │   └── LockHeldError           another syncd holds the instance lock   (exit 3)
    ├── StoreError                  the store is full, read-only, damaged,  (exit 2)
    │   │                           locked, or from a newer syncd
    │   └── EmptyStoreError         the store's file holds no store yet     (exit 2)
    ├── StopRequested               SIGTERM/SIGINT during a wait: stop now  (exit 0)
    └── VendorError                 a vendor call did not succeed
        ├── RetriableError          429, 5xx, connection refused: try again later
        │   └── VendorDownError     the breaker is open: stop calling this vendor this run
        ├── OutcomeUnknownError     the request went out, the answer did not come back
        └── FatalError              the vendor refused the request (4xx): do not repeat it
            ├── AuthError           401/403: credentials wrong, expired or revoked
            └── QuotaError          the account's tariff or quota is exhausted (Altcraft 402)

`VendorError`s are caught by the delivery loop and become delivery states; they reach the
CLI only from `syncd check`.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Root of every error syncd raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(SyncdError):
    """A config file, mapping file or secret is wrong: `file: [table] key: what is wrong`."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        table: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if file:
            where += f"{file}: "
        if table:
            where += f"[{table}] "
        if key:
            where += f"{key}: "
        super().__init__(where + message, hint=hint)
        self.file, self.table, self.key = file, table, key
        self.bare = message  # without the `file: [table] key:` prefix


class OptionError(ConfigError):
    """A connector refused one of its own options at load (`Connector.check_options`); the
    loader re-raises it as a ConfigError naming the file and table."""

    def __init__(self, key: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, key=key, hint=hint)


class SourceError(SyncdError):
    """The export cannot be used (missing, unreadable, empty, no key column)."""


class NotSettledError(SourceError):
    """The export is still being written; try again once its size and mtime are stable."""

    exit_code = 3


class GuardError(SyncdError):
    """A safety guard refused the run (truncated export); `--force` overrides."""

    exit_code = 3


class LockHeldError(GuardError):
    """Another syncd process holds the instance lock."""


class StoreError(SyncdError):
    """The SQLite store cannot be opened, read or written; the message names its path."""


class EmptyStoreError(StoreError):
    """The store's file holds no store (0 bytes, or a database with nothing in it) where a
    command needs one: `syncd check` says so and goes on, every other command stops."""


class StopRequested(SyncdError):
    """The operator or systemd asked syncd to stop; raised out of a wait (backoff, polling)."""

    exit_code = 0


class VendorError(SyncdError):
    """A vendor call did not succeed."""

    def __init__(
        self,
        message: str,
        *,
        vendor: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        # vendors echo requests, credentials included: what is kept of their words is scrubbed
        from syncd.log import scrub  # syncd.log imports nothing of syncd

        message = scrub(message)
        hint = scrub(hint) if hint else hint
        super().__init__(f"{vendor}: {message}" if vendor else message, hint=hint)
        self.vendor = vendor
        self.status = status
        self.retry_after = retry_after
        self.reason = message


class RetriableError(VendorError):
    """429, 5xx or a connection that never carried the request: safe to try again later."""


class VendorDownError(RetriableError):
    """The circuit breaker is open for this vendor: no more calls this run."""


class OutcomeUnknownError(VendorError):
    """The request was sent but no answer came back: it may or may not have taken effect."""


class FatalError(VendorError):
    """The vendor refused the request; repeating it unchanged will not help."""


class AuthError(FatalError):
    """Credentials are wrong, expired or revoked."""


class EndpointError(FatalError):
    """The configured URL is wrong: a 3xx (never followed), a 404 or 405, or an absolute URL
    off the configured host. No contact is at fault: the vendor is stopped for the run."""


class QuotaError(FatalError):
    """The vendor account's quota or tariff limit is exhausted."""
