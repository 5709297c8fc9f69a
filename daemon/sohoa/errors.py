"""The daemon's exceptions.

One root, :class:`SohoaError`, and one base per subsystem. Every error has a
stable ``code`` that the CLI exit status and the MQTT state both use, and a
message template in English marked for translation, so that logs stay in
English (``str(error)``) while users read it in their language
(:meth:`SohoaError.user_message`).
"""

from __future__ import annotations

import json

from sohoa.i18n import N_, gettext


class SohoaError(Exception):
    """Root of every error the daemon raises on purpose."""

    code = "error"
    exit_status = 1
    template = N_("Unexpected error: {detail}")

    def __init__(self, template: str | None = None, /, **params: object) -> None:
        self.message_template = template or self.template
        self.params = params
        super().__init__(self._format(self.message_template))

    def _format(self, template: str) -> str:
        try:
            return template.format(**self.params)
        except (KeyError, IndexError, ValueError):
            return f"{template} {self.params}"

    def user_message(self) -> str:
        """Return the message in the selected user language."""
        return self._format(gettext(self.message_template))

    def detail(self) -> str:
        """Return the message template and its parameters as JSON, so the message can be shown later in any language."""
        params = {name: str(value) for name, value in self.params.items()}
        return json.dumps({"template": self.message_template, "params": params}, ensure_ascii=False)


def user_message_from_detail(detail: str | None) -> str | None:
    """Return the message that :meth:`SohoaError.detail` stored in the selected user language, or None if it cannot be read."""
    if not detail:
        return None
    try:
        data = json.loads(detail)
        return SohoaError(data["template"], **data["params"]).user_message()
    except (ValueError, KeyError, TypeError):
        return None


class JobFinding(SohoaError):
    """A reason the journal records for a job (its pages lost, the scan cut short), with its own ``code``."""

    def __init__(self, code: str, template: str, /, **params: object) -> None:
        super().__init__(template, **params)
        self.code = code


class ConfigError(SohoaError):
    code = "config_invalid"
    exit_status = 78  # EX_CONFIG from sysexits.h, which systemd also documents


class HardwareError(SohoaError):
    code = "gpio_failed"
    exit_status = 69  # EX_UNAVAILABLE


class ScannerError(SohoaError):
    code = "scanner_failed"
    exit_status = 69


class ScannerNotFoundError(ScannerError):
    code = "scanner_not_found"


class FeederEmptyError(ScannerError):
    code = "feeder_empty"


class PaperJamError(ScannerError):
    code = "paper_jam"


class CoverOpenError(ScannerError):
    code = "cover_open"


class ScannerIOError(ScannerError):
    code = "scanner_io_error"


class OcrError(SohoaError):
    code = "ocr_failed"


class ModelError(OcrError):
    code = "model_invalid"
    exit_status = 78


class ImageError(SohoaError):
    code = "image_invalid"
    exit_status = 65  # EX_DATAERR


class PdfError(SohoaError):
    code = "pdf_failed"


class SigningError(SohoaError):
    code = "signing_failed"


class TokenNotFoundError(SigningError):
    code = "token_missing"


class KeyNotFoundError(SigningError):
    code = "key_not_found"


class PinError(SigningError):
    code = "token_pin_invalid"


class SignatureInvalidError(SigningError):
    code = "signature_invalid"


class JournalError(SohoaError):
    code = "journal_failed"


class DiskFullError(JournalError):
    code = "disk_full"


class UploadError(SohoaError):
    code = "upload_failed"


class ArchiveUnreachableError(UploadError):
    code = "archive_unreachable"


class UploadRejectedError(UploadError):
    code = "upload_rejected"


class UploadConflictError(UploadError):
    code = "upload_conflict"


class MqttError(SohoaError):
    code = "mqtt_failed"


class ReportError(SohoaError):
    """A progress report could not be built: an invalid period, a malformed box summary, a missing font."""

    code = "report_failed"
    exit_status = 65  # EX_DATAERR


class JournalRebuiltError(JournalError):
    """The journal was corrupt and was rebuilt from the per-job manifests at start-up."""

    code = "journal_rebuilt"


class TimestampUnavailableError(SigningError):
    """The time-stamping authority did not respond or returned no usable RFC 3161 token."""

    code = "timestamp_unavailable"


class PageCountMismatchError(ScannerError):
    """A document's scanned page count differs from the count its cover or separator sheet declares."""

    code = "page_count_mismatch"


class UploadSettingsError(UploadRejectedError):
    """The archive rejected the box's token or address, so every upload fails until a person fixes the [upload] settings."""

    code = "upload_settings_invalid"


class HotFolderError(SohoaError):
    """The hot folder is missing, not a folder, or not writable by the daemon."""

    code = "hot_folder_unavailable"
    exit_status = 78


class ImportRejectedError(SohoaError):
    """A file in the hot folder cannot be imported; it is moved to ``rejected/`` with this reason."""

    code = "import_rejected"
    exit_status = 65


class EmptyFileError(ImportRejectedError):
    code = "import_empty"


class UnsupportedFileError(ImportRejectedError):
    code = "import_unsupported"


class CorruptFileError(ImportRejectedError):
    code = "import_corrupt"


class EncryptedPdfError(ImportRejectedError):
    code = "import_encrypted"


class TooManyPagesError(ImportRejectedError):
    code = "import_too_many_pages"


class DuplicateImportError(ImportRejectedError):
    code = "import_duplicate"


class ImportSignatureInvalidError(ImportRejectedError):
    """A signed PDF whose signature does not verify or whose signed bytes were changed."""

    code = "import_signature_invalid"


class AllPagesBlankError(ImageError):
    """Every page of a job was found blank, so there is no document to build; the scans are kept."""

    code = "all_pages_blank"


class ScanCancelledError(ScannerError):
    """Staff cancelled the scan with a long press; the pages read before it are kept."""

    code = "scan_cancelled"


class BlankFileError(ImportRejectedError):
    """Every page of a file in the hot folder is blank, so it contains no document to archive."""

    code = "import_blank"
