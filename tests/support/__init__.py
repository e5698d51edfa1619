"""Helpers shared by the unit, integration and end-to-end tests and by the benchmarks: process and
bus/store kits, fake stage services, the Prometheus and TLS kits. Test packages import helpers from
here, never from each other, so each suite can run (and be moved) on its own."""
