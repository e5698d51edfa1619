"""The shared core every service imports: settings, bus, artifact store, metrics, runner, local stack."""
