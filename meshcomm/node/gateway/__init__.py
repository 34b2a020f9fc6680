"""The node's local SIP gateway (sans-IO): a stateful proxy and registrar for the node's
own SIP clients, carrying their requests across the mesh.

The modules form one dependency chain, leaves first:

* :mod:`.types` — addresses, outputs, configuration, hooks (SDP rewriting, call end);
* :mod:`.rfc` — RFC 3261 answers to refused requests and the node's own hosts;
* :mod:`.proxy_state` — the proxy transaction's lifecycle, an Enum table citing RFC 3261
  §16/§17 (``PROXY_TX_TABLE``);
* :mod:`.deadlines` — a deadline heap with lazy invalidation (O(1) amortised next timer);
* :mod:`.parts` — the proxy transaction (``ProxyTx``, stepped through that table), rate
  limiting, journal records;
* :mod:`.transactions` — the table of proxy transactions (by server key and branch, the
  lingering bound) and their timers on a deadline heap;
* :mod:`.contacts` — Contact/Call-ID rewriting for clients that cut corners;
* :mod:`.admission`, :mod:`.regquota` — fair load shedding and registrar quotas;
* :mod:`.registrar` — local registrations (RFC 3261 §10.3), expiring on a deadline heap;
* :mod:`.builtin` — the node's built-in user agent (its own AoR);
* :mod:`.custody` — handing MESSAGEs to store-and-forward and answering once durable;
* :mod:`.responses` — response processing (§16.7): matching, relaying, Timer C, late 2xx;
* :mod:`.core` — :class:`~meshcomm.node.gateway.core.SipGateway`, composing the above
  (input, request routing and forwarding, answers, timers, the built-in UA's exchange).

:mod:`.custody` and :mod:`.responses` are mixins of ``SipGateway`` (``SipGateway`` ->
``ResponseRelay`` -> ``MessageCustody``): each declares the attributes and stubs the
gateway operations it uses.
"""
