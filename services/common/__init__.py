"""Code every service shares: settings, event contracts, broker and database adapters, HTTP plumbing."""
