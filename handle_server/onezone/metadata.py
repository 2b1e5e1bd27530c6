"""The metadata Onezone keeps with a share's handle: Dublin Core (``oai_dc``) or Europeana
(``edm``) XML, checked as Onezone checks it and parsed safely.

The XML is parsed with defusedxml: no entity declarations at all (so no expansion bombs and no
external entities), no network or file access. A document type declaration without entities
(the ``<!DOCTYPE rdf:RDF SYSTEM "...dcmes-xml-dtd.dtd">`` of the Dublin Core example) is allowed
and never fetched. The text is stored exactly as given: reading it back returns the same string.
"""

from __future__ import annotations

from xml.etree.ElementTree import ParseError

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

__all__ = ["MAX_METADATA_CHARS", "METADATA_PREFIXES", "MetadataError", "check_metadata"]

#: Onezone's ``METADATA_SIZE_LIMIT``.
MAX_METADATA_CHARS = 100_000
METADATA_PREFIXES = ("oai_dc", "edm")

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
EDM_NS = "http://www.europeana.eu/schemas/edm/"


class MetadataError(ValueError):
    """The metadata is not XML, or not of the form its metadata prefix needs."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def check_metadata(text: str, metadata_prefix: str) -> None:
    """Raise ``MetadataError`` unless ``text`` is well-formed XML of ``metadata_prefix``'s form:
    ``oai_dc``: a ``<metadata>`` root (Onezone's form; namespaces unchecked, as Onezone) or a
    Dublin Core ``<rdf:RDF>`` document; ``edm``: an ``<rdf:RDF>`` holding an
    ``<edm:ProvidedCHO>``. The length limit is the caller's (it is a different error)."""
    try:
        root = ElementTree.fromstring(text, forbid_dtd=False)
    except DefusedXmlException as exc:
        raise MetadataError(
            f"entity declarations are not allowed in metadata ({type(exc).__name__})"
        ) from None
    except ParseError as exc:
        raise MetadataError(f"not well-formed XML: {exc}") from None
    except ValueError as exc:  # e.g. an encoding declaration Python's parser refuses
        raise MetadataError(f"not usable XML: {exc}") from None
    is_rdf = root.tag == f"{{{RDF_NS}}}RDF"
    if metadata_prefix == "oai_dc":
        if _local(root.tag) != "metadata" and not is_rdf:
            raise MetadataError(
                f"the root element must be <metadata> (or a Dublin Core <rdf:RDF>), "
                f"not <{_local(root.tag)}>"
            )
    elif metadata_prefix == "edm":
        if not is_rdf:
            raise MetadataError(f"the root element must be <rdf:RDF>, not <{_local(root.tag)}>")
        if root.find(f".//{{{EDM_NS}}}ProvidedCHO") is None:
            raise MetadataError("an EDM record needs an <edm:ProvidedCHO> element")
    else:  # pragma: no cover - callers check the prefix first
        raise MetadataError(f"unknown metadata prefix {metadata_prefix!r}")
