"""Wire format: msgpack codecs with hard size and type limits.

Everything that reads bytes from the network is named ``*_untrusted`` and raises only
:class:`meshcomm.errors.DecodeError`.
"""
