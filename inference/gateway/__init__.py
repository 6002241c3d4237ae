"""The gateway: the client port (5000) in front of the model server, one module per job.

`python -m inference.gateway` (``__main__``) parses the flags and serves ``app``: its routes and handlers,
built from ``body`` (request bodies up to the limit), ``validation`` (what a request may ask for),
``translation`` (which model a request names), ``kaito_chat`` (Kaito's POST /chat as one OpenAI call),
``upstream`` (the calls to the runtime), ``stream`` and ``answers`` (answers held to the OpenAI types and
stop strings), ``jsonio`` (its JSON and error shapes) and ``state`` (what an app holds). ``names`` follows
the desired adapter set's names for the router pod's gateway.

Nothing is imported here, so the modules load only when used.
"""
