"""What a file is, from its first bytes: the client's name for copyledger.matching.media,
which the server uses too (an upload's declared type can be as wrong as a file name)."""

from copyledger.matching.media import SNIFF_BYTES, media_type_of, sniff, work_type_of

__all__ = ["SNIFF_BYTES", "media_type_of", "sniff", "work_type_of"]
