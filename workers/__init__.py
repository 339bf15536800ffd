"""Long-running loops that read a snapshot, ask routing/ and act through infra/; they hold no policy."""
