"""ARM for tests: the local fake agentPools server (fake_arm), the product's client pointed at it (pools) and the
Machine hook app wired to it for gunicorn (machine_app)."""
