"""The log itself: pure Merkle maths, canonical entries, blocks, storage, sequencing, audit."""
