"""Recognise encrypted and corrupt inputs before parsing, and classify parser errors after.

Parsers report these cases badly (an encrypted .docx raises "not a ZIP archive", a PGP e-mail
parses into "Version: 1"), so the container is inspected first.
"""

from __future__ import annotations

import base64
import email
import email.policy
import io
import re
import zipfile

from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.parsing.text import codec_for_label, decode_text, utf16_without_bom

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
OOXML = {".docx", ".pptx", ".xlsx"}
ZIP_BASED = OOXML | {".odt", ".epub"}
RAW_8BIT = re.compile("[\udc80-\udcff]")  # bytes >= 0x80, as the bytes parser keeps them
FOLDING = re.compile(r"\r?\n(?=[ \t])")


def refuse_encrypted_or_corrupt(data: bytes, ext: str) -> None:
    if data.startswith(OLE_MAGIC):
        _check_ole(data, ext)
    elif ext in ZIP_BASED:
        _check_zip(data, ext)
    elif ext == ".pdf":
        _check_pdf(data)
    elif ext == ".eml":
        _check_email(normalise_email_bytes(data))


def _check_ole(data: bytes, ext: str) -> None:
    import olefile

    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            streams = {"/".join(s) for s in ole.listdir()}
    except Exception as exc:
        raise IngestionError(ErrorType.CORRUPT, f"damaged OLE container: {exc}") from exc
    if "EncryptionInfo" in streams and "EncryptedPackage" in streams:
        raise IngestionError(ErrorType.ENCRYPTED, f"password-protected {ext or 'Office'} file (encrypted package)")
    if ext in OOXML:
        raise IngestionError(ErrorType.CORRUPT, f"a {ext} should be a ZIP package, this is an OLE container")
    if ext == ".msg":
        _check_msg(data)
    elif ext == ".xls":
        import msoffcrypto

        try:
            encrypted = msoffcrypto.OfficeFile(io.BytesIO(data)).is_encrypted()
        except Exception:  # noqa: BLE001 - msoffcrypto cannot read some valid XLS writers
            encrypted = False
        if encrypted:
            raise IngestionError(ErrorType.ENCRYPTED, "password-protected .xls workbook")


def _check_msg(data: bytes) -> None:
    from oxmsg import Message

    try:
        message = Message.load(io.BytesIO(data))
    except Exception as exc:
        raise IngestionError(ErrorType.CORRUPT, f"unreadable Outlook message: {exc}") from exc
    content_type = (message.message_headers.get("Content-Type", "") or "").lower()
    if ("multipart/encrypted" in content_type or "pkcs7-mime" in content_type
            or message.message_class.upper().startswith("IPM.NOTE.SMIME")):
        raise IngestionError(ErrorType.ENCRYPTED,
                             "encrypted Outlook message (S/MIME or PGP); cannot be read without the key")


def _check_zip(data: bytes, ext: str) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except zipfile.BadZipFile as exc:
        raise IngestionError(ErrorType.CORRUPT,
                             f"damaged or truncated {ext} (not a valid ZIP package: {exc})") from exc
    if damaged:
        raise IngestionError(ErrorType.CORRUPT, f"damaged {ext}: member {damaged} fails its checksum")
    if ext in OOXML and "[Content_Types].xml" not in names:
        raise IngestionError(ErrorType.CORRUPT, f"not a valid {ext}: [Content_Types].xml is missing")


def _check_pdf(data: bytes) -> None:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if b"%PDF-" not in data[:1024]:
        raise IngestionError(ErrorType.CORRUPT, "not a PDF: the %PDF- header is missing")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and int(reader.decrypt("")) == 0:
            raise IngestionError(ErrorType.ENCRYPTED,
                                 "password-protected PDF (a user password is required to open it)")
    except IngestionError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        # pypdf is stricter than pdfminer: leave the verdict to the text extraction.
        del exc


def normalise_email_bytes(data: bytes) -> bytes:
    """UTF-16 e-mails (with or without BOM) become UTF-8 bytes the e-mail parser can read, and
    text parts and headers that the standard library would misread are re-encoded."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        data = data.decode("utf-16", errors="replace").encode("utf-8")
    else:
        text = utf16_without_bom(data)
        data = text.encode("utf-8") if text is not None else data
    return _repair_charsets(data)


def _repair_charsets(data: bytes) -> bytes:
    """unstructured reads a body with `get_content()`: the declared charset with errors replaced
    ("ni\\ufffdo" for a cp1252 body declared or defaulted to UTF-8/ASCII), C1 controls for cp1252
    declared as latin-1, LookupError for an unknown label; raw 8-bit headers become U+FFFD. Each
    text part is decoded by `decode_text` with its charset as the declaration, and rewritten as
    UTF-8 only where that differs; the message is re-serialised only if something was."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    try:
        charset = next((p.get_content_charset() for p in message.walk() if p.get_content_charset()), None)
        changed = False
        for part in message.walk():
            changed |= _repair_headers(part, charset)
            if not part.is_multipart() and part.get_content_maintype() == "text":
                changed |= _repair_body(part)
        return message.as_bytes() if changed else data
    except Exception:  # noqa: BLE001 - the stdlib raises many types on malformed messages
        return data  # a best-effort repair: the partitioner reads the bytes as before


def _repair_body(part) -> bool:
    payload = part.get_payload(decode=True)
    if not payload:
        return False
    text = decode_text(payload, declared=part.get_content_charset())
    try:
        if part.get_content() == text:
            return False
    except LookupError:  # an unknown charset label
        pass
    part.set_payload(base64.encodebytes(text.encode("utf-8")).decode("ascii"))
    del part["Content-Transfer-Encoding"]
    part["Content-Transfer-Encoding"] = "base64"
    part.set_param("charset", "utf-8")
    return True


def _repair_headers(part, charset: str | None) -> bool:
    """Raw 8-bit header bytes (no RFC 2047 encoded words): UTF-8 if they are, else the message's
    charset, else cp1252."""
    raw = list(part.raw_items())
    broken = {name.lower() for name, value in raw if RAW_8BIT.search(value)}
    for name in broken:
        values = [_decode_header_bytes(value, charset) for key, value in raw if key.lower() == name]
        del part[name]
        for value in values:
            try:
                part[name] = value
            except ValueError:  # a second Subject/From/... beyond the policy's count: drop it
                break
    return bool(broken)


def _decode_header_bytes(value: str, charset: str | None) -> str:
    value = FOLDING.sub("", value)
    raw = value.encode("ascii", "surrogateescape")
    for codec in ("utf-8", codec_for_label(charset) or "cp1252"):
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return raw.decode("cp1252", errors="replace")


def _check_email(data: bytes) -> None:
    message = email.message_from_bytes(data, policy=email.policy.default)
    content_type = message.get_content_type()
    if content_type == "multipart/encrypted" or content_type in ("application/pkcs7-mime",
                                                                 "application/x-pkcs7-mime"):
        raise IngestionError(ErrorType.ENCRYPTED,
                             f"encrypted e-mail ({content_type}); cannot be read without the key")


def classify_parser_error(exc: Exception, ext: str) -> IngestionError:
    name, message = type(exc).__name__, str(exc)
    lowered = message.lower()
    if "password" in lowered or "encrypt" in lowered:
        return IngestionError(ErrorType.ENCRYPTED, f"password-protected {ext} ({name}: {message})"[:500])
    if name in ("BadZipFile", "PackageNotFoundError", "XMLSyntaxError", "KeyError") or "zip" in lowered:
        return IngestionError(ErrorType.CORRUPT, f"damaged {ext} ({name}: {message})"[:500])
    if name == "UnsupportedFileFormatError":
        return IngestionError(ErrorType.UNSUPPORTED_TYPE, message[:500])
    return IngestionError(ErrorType.PARSE_ERROR, f"{name}: {message}"[:500])
