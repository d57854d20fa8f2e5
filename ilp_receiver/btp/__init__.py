"""BTP/2.0 sessions without I/O: :mod:`ilp_receiver.btp.session` holds
:class:`~ilp_receiver.btp.session.BtpSessionState` and its events.

The wire format is :mod:`ilp_receiver.codec.btp`; the asyncio driver that reads and
writes a WebSocket is :mod:`ilp_receiver.links.btp_session`.
"""
