"""Pure scheduling policy over plain values: no I/O, no clock reads, stdlib and pydantic only."""
