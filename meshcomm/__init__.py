"""meshcomm: serverless SIP communications for emergency responders over ad-hoc meshes."""

__version__ = "0.1.0"
