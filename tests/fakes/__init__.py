"""Stand-ins for external services, served for real on loopback so the code under test is not patched."""
