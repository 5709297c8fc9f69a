"""XMP metadata: the document's fields under sohoa's namespace, with a PDF/A extension schema.

PDF/A allows XMP properties outside the predefined schemas only when the
packet describes them in a ``pdfaExtension:schemas`` bag (ISO 19005-2,
6.6.2.3). Every field passed to :func:`add_document_fields` becomes a Text
property of :data:`DOCUMENT_NAMESPACE` and gets its description there.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from lxml import etree

from sohoa.errors import PdfError
from sohoa.i18n import N_

DOCUMENT_NAMESPACE = "urn:x-sohoa:document:1.0/"
DOCUMENT_PREFIX = "sohoadoc"
SCHEMA_NAME = "sohoa document metadata (national minimum metadata set for digitized documents)"

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
PDFA_EXTENSION = "http://www.aiim.org/pdfa/ns/extension/"
PDFA_SCHEMA = "http://www.aiim.org/pdfa/ns/schema#"
PDFA_PROPERTY = "http://www.aiim.org/pdfa/ns/property#"
EXTENSION_NAMESPACES = {
    "pdfaExtension": PDFA_EXTENSION,
    "pdfaSchema": PDFA_SCHEMA,
    "pdfaProperty": PDFA_PROPERTY,
}

FIELD_DESCRIPTIONS = {
    "DocCode": "Document identifier: agency code, type abbreviation, six-digit sequence, version",
    "TypeName": "Name of the document type",
    "CodeNumber": "Number of the document",
    "CodeNotation": "Notation of the document: type and issuer abbreviations",
    "IssuedDate": "Date the document was issued",
    "OrganName": "Name of the issuing body",
    "Subject": "Summary of the content",
    "Language": "Language of the document",
    "PageAmount": "Number of pages",
    "Description": "Note",
    "Keyword": "Keywords",
    "ConfidenceLevel": "Level of confidentiality",
    "Format": "Physical state of the original",
    "Position": "Position of the signer",
    "FullName": "Full name of the signer",
    "FileCode": "Code of the file the document belongs to",
    "UnsureFields": "Comma-separated names of fields a person must complete or check",
}

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Characters that XML 1.0 forbids; they are dropped from field values.
_XML_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _rdf(name: str) -> str:
    return f"{{{RDF}}}{name}"


def clean_value(value: str) -> str:
    return _XML_INVALID.sub("", unicodedata.normalize("NFC", str(value)))


def check_field_names(fields: Mapping[str, str]) -> None:
    for name in fields:
        if not _FIELD_NAME.match(name):
            raise PdfError(
                N_("Metadata field name {name!r} is not a valid XML name; use letters, digits, '_', '-' or '.'."),
                name=name,
            )


def _text_element(parent: etree._Element, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.text = text
    return element


def extension_schema_description(field_names: list[str]) -> etree._Element:
    """Return an ``rdf:Description`` that declares sohoa's namespace and its properties."""
    description = etree.Element(_rdf("Description"), nsmap={"rdf": RDF, **EXTENSION_NAMESPACES})
    description.set(_rdf("about"), "")
    schemas = etree.SubElement(description, f"{{{PDFA_EXTENSION}}}schemas")
    schema = etree.SubElement(etree.SubElement(schemas, _rdf("Bag")), _rdf("li"))
    schema.set(_rdf("parseType"), "Resource")
    _text_element(schema, f"{{{PDFA_SCHEMA}}}schema", SCHEMA_NAME)
    _text_element(schema, f"{{{PDFA_SCHEMA}}}namespaceURI", DOCUMENT_NAMESPACE)
    _text_element(schema, f"{{{PDFA_SCHEMA}}}prefix", DOCUMENT_PREFIX)

    properties = etree.SubElement(etree.SubElement(schema, f"{{{PDFA_SCHEMA}}}property"), _rdf("Seq"))
    for name in field_names:
        item = etree.SubElement(properties, _rdf("li"))
        item.set(_rdf("parseType"), "Resource")
        _text_element(item, f"{{{PDFA_PROPERTY}}}name", name)
        _text_element(item, f"{{{PDFA_PROPERTY}}}valueType", "Text")
        _text_element(item, f"{{{PDFA_PROPERTY}}}category", "external")
        _text_element(item, f"{{{PDFA_PROPERTY}}}description", FIELD_DESCRIPTIONS.get(name, f"Document field {name}"))
    return description


def fields_description(fields: Mapping[str, str]) -> etree._Element:
    """Return an ``rdf:Description`` holding each field as a simple property of sohoa's namespace."""
    description = etree.Element(_rdf("Description"), nsmap={"rdf": RDF, DOCUMENT_PREFIX: DOCUMENT_NAMESPACE})
    description.set(_rdf("about"), "")
    for name, value in fields.items():
        _text_element(description, f"{{{DOCUMENT_NAMESPACE}}}{name}", clean_value(value))
    return description


def add_document_fields(xmp: bytes, fields: Mapping[str, str]) -> bytes:
    """Return the XMP packet ``xmp`` with ``fields`` and their extension schema added."""
    check_field_names(fields)
    parser = etree.XMLParser(remove_blank_text=False, resolve_entities=False, no_network=True)
    tree = etree.fromstring(xmp, parser).getroottree()
    rdf_root = tree.find(f".//{_rdf('RDF')}")
    if rdf_root is None:
        raise PdfError(N_("The XMP metadata of the PDF has no rdf:RDF element; it cannot take document fields."))
    rdf_root.append(extension_schema_description(list(fields)))
    rdf_root.append(fields_description(fields))
    return etree.tostring(tree, encoding="utf-8")


def read_document_fields(xmp: bytes) -> dict[str, str]:
    """Return the fields of sohoa's namespace found in an XMP packet."""
    root = etree.fromstring(xmp, etree.XMLParser(resolve_entities=False, no_network=True))
    prefix = f"{{{DOCUMENT_NAMESPACE}}}"
    return {
        element.tag[len(prefix) :]: element.text or ""
        for element in root.iter()
        if isinstance(element.tag, str) and element.tag.startswith(prefix)
    }


def undescribed_properties(xmp: bytes) -> list[str]:
    """Return the properties of sohoa's namespace that the extension schema does not describe."""
    root = etree.fromstring(xmp, etree.XMLParser(resolve_entities=False, no_network=True))
    described = set()
    for schema in root.iter(f"{{{PDFA_EXTENSION}}}schemas"):
        for item in schema.iter(_rdf("li")):
            if item.findtext(f"{{{PDFA_SCHEMA}}}namespaceURI") != DOCUMENT_NAMESPACE:
                continue
            described.update(name.text or "" for name in item.iter(f"{{{PDFA_PROPERTY}}}name"))
    return sorted(name for name in read_document_fields(xmp) if name not in described)
