"""Identity, credentials, signing and signature-verification caching."""
