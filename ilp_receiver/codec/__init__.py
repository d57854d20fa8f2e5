"""Sans-I/O wire formats: bytes in, frozen dataclasses out, and back.

No sockets, no clock, no randomness: every module here is a pure function of its
inputs.  Decoders raise only :class:`~ilp_receiver.errors.DecodeError`.
"""
