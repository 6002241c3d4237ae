"""ARM for tests: the local fake agentPools server (fake_arm) and the Machine hook app wired to it (machine_app)."""
