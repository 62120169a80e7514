"""Orders: where purchases enter the platform."""
