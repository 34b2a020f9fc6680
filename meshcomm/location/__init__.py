"""Location service: signed bindings, the merge rule, trust policy, expiry and lookups."""
