"""Associated files: files embedded in a PDF/A-3 document, such as the fields as ``fields.json``.

PDF/A-2 allows an embedded file only if the file is itself PDF/A, so any
other attachment makes the document PDF/A-3 (ISO 19005-3). PDF/A-3 requires
each embedded file to have a MIME type (``/Subtype``), a file specification
with ``/F``, ``/UF`` and ``/AFRelationship``, and a place in an ``/AF``
array. sohoa lists it in the catalog's ``/AF``, because the file belongs to
the whole document, and in the ``/EmbeddedFiles`` name tree, where viewers
look for attachments. The embedded file stream's ``/Params`` carries
``/ModDate``, ``/CreationDate``, ``/Size`` and ``/CheckSum`` (MD5), which
:func:`attachment_findings` checks against the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import pikepdf
from pikepdf.models.metadata import encode_pdf_date

# The attachment that carries the document's metadata when pdf.attach_fields is on.
FIELDS_ATTACHMENT_NAME = "fields.json"
# The relationships ISO 19005-3 allows in /AFRelationship.
RELATIONSHIPS = ("Source", "Data", "Alternative", "Supplement", "Unspecified")


@dataclass(frozen=True)
class Attachment:
    """A file to embed as an associated file of the whole document."""

    name: str  # file name, also the key in the /EmbeddedFiles name tree
    data: bytes
    mime_type: str  # for example "application/json"
    description: str
    relationship: str = "Data"  # one of RELATIONSHIPS
    created_at: datetime | None = None  # time-zone-aware; the build time when None


def attach(pdf: pikepdf.Pdf, attachment: Attachment, *, now: datetime) -> None:
    """Embed ``attachment`` in ``pdf`` and list its file specification in the catalog's ``/AF``."""
    if attachment.relationship not in RELATIONSHIPS:
        raise ValueError(f"AFRelationship {attachment.relationship!r} is not one of {', '.join(RELATIONSHIPS)}")
    spec = pikepdf.AttachedFileSpec(
        pdf,
        attachment.data,
        description=attachment.description,
        filename=attachment.name,
        mime_type=attachment.mime_type,
        creation_date=encode_pdf_date(attachment.created_at or now),
        mod_date=encode_pdf_date(now),
        relationship=pikepdf.Name("/" + attachment.relationship),
    )
    pdf.attachments[attachment.name] = spec
    # pikepdf 10.18 makes the file specification indirect and appends it to the
    # catalog's /AF when a relationship is given. Add it where that is not so.
    names = pdf.Root.Names.EmbeddedFiles.Names
    index = next(index for index in range(0, len(names), 2) if str(names[index]) == attachment.name)
    if not names[index + 1].is_indirect:
        names[index + 1] = pdf.make_indirect(names[index + 1])
    filespec = names[index + 1]
    associated = pdf.Root.get("/AF")
    if associated is None:
        pdf.Root.AF = pikepdf.Array([filespec])
    elif filespec.objgen not in {item.objgen for item in associated}:
        associated.append(filespec)


def read_attachments(pdf: pikepdf.Pdf) -> dict[str, bytes]:
    """Return the data of every file in the ``/EmbeddedFiles`` name tree, by name."""
    return {name: spec.get_file().read_bytes() for name, spec in pdf.attachments.items()}


def attachment_findings(pdf: pikepdf.Pdf) -> list[str]:
    """Check what pikepdf's PDF/A-3 validator leaves out: each embedded file's ``/Params``.

    Returns one English finding per problem: a missing ``/ModDate``, or a
    ``/Size`` or ``/CheckSum`` that does not match the embedded data.
    """
    findings = []
    for name, spec in pdf.attachments.items():
        stream = spec.obj.EF.get("/F")
        if stream is None:
            findings.append(f"embedded file {name} has no /EF /F stream")
            continue
        params = stream.get("/Params")
        if params is None or "/ModDate" not in params:
            findings.append(f"embedded file {name} has no /Params /ModDate")
            continue
        data = stream.read_bytes()
        if "/Size" in params and int(params.Size) != len(data):
            findings.append(f"embedded file {name}: /Size {int(params.Size)} but the data has {len(data)} bytes")
        if "/CheckSum" in params and bytes(params.CheckSum) != hashlib.md5(data).digest():  # noqa: S324 - the checksum PDF defines
            findings.append(f"embedded file {name}: /CheckSum does not match the data")
    return findings
